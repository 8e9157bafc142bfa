"""A toy model family, declared in the test tree the way `models/<family>.py` declares one:
the generic core must serve it with nothing of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models import gates
from models.family import Family, Grouping, Rate, Recording, Training
from models.fields import EntityId
from models.registry import ServedModel

TOY_MODEL = "toy-model"


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    point_id: EntityId = None
    x: float = Field(ge=-100, le=100, allow_inf_nan=False)
    y: float = Field(ge=-100, le=100, allow_inf_nan=False)


class Verdict(BaseModel):
    point_id: str | None
    probability: float
    above: bool
    model_version: str


@dataclass(frozen=True)
class ToyScorer:
    model: ServedModel

    @property
    def models(self) -> tuple[ServedModel, ...]:
        return (self.model,)

    def score(self, records: Sequence[Point]) -> list[Verdict]:
        if not records:
            return []
        frame = pd.DataFrame({"x": [r.x for r in records], "y": [r.y for r in records]})
        probabilities = self.model.model.predict_proba(frame)[:, 1]
        return [
            Verdict(
                point_id=r.point_id,
                probability=float(p),
                above=bool(p >= self.model.threshold),
                model_version=self.model.version,
            )
            for r, p in zip(records, probabilities, strict=True)
        ]

    def score_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        probabilities = self.model.model.predict_proba(features[["x", "y"]])[:, 1]
        return pd.DataFrame(
            {
                "probability": probabilities,
                "above": probabilities >= self.model.threshold,
                "model_version": np.full(len(features), self.model.version, dtype=object),
            }
        )


def _assemble(models: Mapping[str, ServedModel], previous: Sequence[Any]) -> ToyScorer:
    return ToyScorer(models[TOY_MODEL])


def _frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({name: np.asarray(columns[name], dtype="float64") for name in ("x", "y")})


def toy_family(name: str = "toy") -> Family:
    """A one-model family: is a point above the line y = x?"""
    return Family(
        name=name,
        models=(TOY_MODEL,),
        record=Point,
        answer=Verdict,
        records_field="points",
        recording=Recording(
            decision=name,
            primary_model=TOY_MODEL,
            entity_field="point_id",
            score_field="probability",
            label_field="above",
        ),
        assemble=_assemble,
        summary="Is each point above the line?",
        file_summary="Score a file of points",
        file_answer="toy_scores",
        column_aliases={"point_id": "point_id", "x": "x", "y": "y"},
        output_columns=("probability", "above", "model_version"),
        feature_frame=_frame,
        gates={TOY_MODEL: gates.roc_auc("above")},
        training=Training(module="tests.support.families", default_data="generated", help="toy"),
        groupings={"x_band": Grouping("inputs", "x", bands=(0.0,))},
        rate=Rate("above rate", "above"),
    )


#: What `CLIENTINSIGHT_CATALOG=tests.support.families:CATALOG` serves: the toy alone.
CATALOG: tuple[Family, ...] = (toy_family(),)
#: A declaration with a piece missing (no promotion gate): start-up must refuse it.
BROKEN: tuple[Family, ...] = (dataclasses.replace(toy_family(), gates={}),)


def train_toy(settings: Any, seed: int = 0) -> str:
    """A logistic regression of "above the line y = x" on random points, logged, registered
    and promoted the way `training/` does it; the version registered."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from models.registry import ensure_experiment
    from training.registration import log_and_register, log_evaluation_set, threshold_tags

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.uniform(-10, 10, 600), "y": rng.uniform(-10, 10, 600)})
    target = (frame["y"] > frame["x"]).astype(int).to_numpy()
    pipeline = Pipeline(
        [
            ("preprocess", ColumnTransformer([("scale", StandardScaler(), ["x", "y"])])),
            ("classifier", LogisticRegression()),
        ]
    ).fit(frame, target)
    ensure_experiment(settings)
    with mlflow.start_run(run_name="toy"):
        log_evaluation_set(frame.assign(above=target))
        version, _ = log_and_register(
            pipeline,
            name=TOY_MODEL,
            signature=ModelSignature(
                inputs=Schema([ColSpec("double", "x"), ColSpec("double", "y")]),
                outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))]),
            ),
            input_example=frame.head(3),
            settings=settings,
            register=True,
            trusted_types=[],
            pyfunc_predict_fn="predict_proba",
            version_tags=threshold_tags(0.5, "holdout_roc_auc", 1.0),
        )
    assert version is not None
    return version
