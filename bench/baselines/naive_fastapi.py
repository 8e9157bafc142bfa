"""Naive baseline: the tutorial architecture. One FastAPI app, the registered pipeline loaded at
start, one `predict_proba` per request on a DataFrame built from the request.

    uvicorn bench.baselines.naive_fastapi:app --port 3101
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

from models import churn, registry

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> Any:
    state["served"] = registry.load(churn.MODEL_NAME)
    yield


app = FastAPI(lifespan=lifespan)


class Body(BaseModel):
    customers: list[churn.Customer]


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/churn/predict")
def predict(body: Body) -> list[dict[str, Any]]:
    served = state["served"]
    frame = pd.DataFrame([c.model_dump(include=set(churn.FEATURES)) for c in body.customers])
    probabilities = served.model.predict_proba(frame[list(churn.FEATURES)])[:, 1]
    return [
        {"customer_id": c.customer_id, "churn_probability": float(p)}
        for c, p in zip(body.customers, probabilities, strict=True)
    ]
