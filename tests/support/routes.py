"""A toy contract on a real route table: what the route and OpenAPI tests serve."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from models.fields import NotABoolean
from serving import errors
from serving.routes import RouteTable, Scored, Upload


class Toy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: Annotated[int, Field(ge=0, le=10), NotABoolean]


class ToyAnswer(BaseModel):
    name: str
    double: int


class Service:
    """What the route handlers are given: records (or an upload) in, answers out."""

    def __init__(self) -> None:
        self.calls = 0

    async def predict(self, records: list[Toy]) -> tuple[list[ToyAnswer], str]:
        self.calls += 1
        return [ToyAnswer(name=r.name, double=2 * r.count) for r in records], "req-1"

    async def score(self, upload: Upload) -> Scored:
        self.calls += 1
        return Scored({"double": upload.columns["count"] * 2}, "req-2")


def toy_routes(service: Service) -> RouteTable:
    """A JSON route and a file route for the toy contract, served by `service`."""
    app = FastAPI()
    errors.install(app)
    routes = RouteTable(app, service=lambda: service)
    routes.predict(
        "/toy/predict",
        operation="toy_predict",
        field="toys",
        record=Toy,
        answer=ToyAnswer,
        handler=Service.predict,
        summary="toys",
    )
    routes.upload(
        "/toy/predict_file",
        operation="toy_predict_file",
        record=Toy,
        aliases={"name": "name", "count": "count"},
        handler=Service.score,
        answer_name="toy_scores",
        summary="toy files",
    )
    return routes
