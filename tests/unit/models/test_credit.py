"""The credit contract and decision rule: fields, leakage guard, segment names, reasons."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from models import credit, fastpath
from models.explain import Factor, LinearExplainer
from tests.support.records import APPLICANT
from training import credit as credit_training
from training.data import load_credit


def _segment(
    rate: float = 0.85, overall: float = 0.78, median: float = 3.0
) -> credit.SegmentAssignment:
    return credit.SegmentAssignment(
        segment=2,
        segment_name="Homeowners, older",
        segment_approval_rate=rate,
        segment_median_income=median,
        overall_approval_rate=overall,
        model_version="4",
    )


def _approval(p: float, threshold: float = 0.7) -> credit.ApprovalScore:
    return credit.ApprovalScore(approval_probability=p, threshold=threshold, model_version="9")


def test_aer_yes_no_values_are_booleans() -> None:
    applicant = credit.Applicant.model_validate(APPLICANT)
    assert applicant.owner is True and applicant.selfemp is False


@pytest.mark.parametrize("leak", credit.LEAKAGE_COLUMNS)
def test_post_issuance_columns_are_refused_by_name(leak: str) -> None:
    with pytest.raises(ValidationError) as info:
        credit.Applicant.model_validate({**APPLICANT, leak: 0.1})
    assert info.value.errors()[0]["loc"] == (leak,)


def test_leakage_columns_are_never_features() -> None:
    assert not set(credit.LEAKAGE_COLUMNS) & set(credit.FEATURES)
    assert credit.TARGET not in credit.FEATURES


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("age", 0.5),
        ("income", -1),
        ("income", 1e308),
        ("reports", -2),
        ("owner", "perhaps"),
        ("reports", True),
        ("active", False),
        ("age", True),
    ],
)
def test_impossible_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        credit.Applicant.model_validate({**APPLICANT, field: value})
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_eligible_when_probability_reaches_threshold() -> None:
    applicant = credit.Applicant.model_validate(APPLICANT)
    assert credit.decide(applicant, _segment(), _approval(0.70)).eligible
    refused = credit.decide(applicant, _segment(), _approval(0.69))
    assert not refused.eligible
    assert refused.reasons[0] == "approval probability 0.69 is below the required 0.70"


def test_cautious_segment_needs_the_margin() -> None:
    applicant = credit.Applicant.model_validate(APPLICANT)
    cautious = _segment(rate=0.22, overall=0.78)
    assert cautious.cautious
    required = 0.7 + credit.CAUTIOUS_MARGIN
    assert not credit.decide(applicant, cautious, _approval(required - 0.01)).eligible
    evaluation = credit.decide(applicant, cautious, _approval(required))
    assert evaluation.eligible
    assert "22% historical approval rate" in evaluation.reasons[1]


def test_segment_just_inside_the_gap_is_not_cautious() -> None:
    assert not _segment(rate=0.78 - credit.CAUTIOUS_GAP + 0.001, overall=0.78).cautious


def test_reasons_are_human_readable() -> None:
    applicant = credit.Applicant.model_validate(
        {**APPLICANT, "reports": 3, "income": 1.8, "active": 0, "majorcards": 0}
    )
    evaluation = credit.decide(applicant, _segment(median=2.5), _approval(0.2))
    assert evaluation.reasons == [
        "approval probability 0.20 is below the required 0.70",
        "3 derogatory reports",
        "income $18,000 below the segment median $25,000",
        "no active credit accounts",
        "holds no major credit card",
    ]
    assert evaluation.model_versions == {"credit-segment": "4", "credit-approval": "9"}
    assert evaluation.segment_name == "Homeowners, older"


def test_one_report_is_singular() -> None:
    applicant = credit.Applicant.model_validate({**APPLICANT, "reports": 1})
    assert "1 derogatory report" in credit.decide(applicant, _segment(), _approval(0.9)).reasons


def test_segment_names_come_from_distinctive_features_and_are_distinct() -> None:
    z = pd.DataFrame(
        [
            {
                "reports": 2.5,
                "age": 0.1,
                "income": 0.0,
                "owner": -0.2,
                "selfemp": 0.0,
                "dependents": 0.0,
                "months": 0.0,
                "majorcards": 0.0,
                "active": 1.0,
            },
            {
                "reports": -0.3,
                "age": 1.2,
                "income": 0.2,
                "owner": 1.5,
                "selfemp": 0.0,
                "dependents": 0.0,
                "months": 0.0,
                "majorcards": 0.0,
                "active": 0.0,
            },
            {
                "reports": -0.3,
                "age": 1.1,
                "income": 0.9,
                "owner": 1.4,
                "selfemp": 0.0,
                "dependents": 0.0,
                "months": 0.0,
                "majorcards": 0.0,
                "active": 0.0,
            },
        ]
    )
    names = credit.name_segments(z)
    assert names[0] == "Derogatory history, credit-active"
    assert names[1] == "Homeowners, older"
    assert names[2] == "Homeowners, older, higher income"


def test_file_columns_flatten_reasons_and_versions() -> None:
    applicant = credit.Applicant.model_validate(APPLICANT)
    evaluation = credit.decide(applicant, _segment(), _approval(0.9))
    columns = credit.file_columns([evaluation])
    assert list(columns) == list(credit.OUTPUT_COLUMNS)
    assert columns["reasons"] == ["; ".join(evaluation.reasons)]
    assert json.loads(columns["model_versions"][0]) == evaluation.model_versions


def test_segmentation_round_trips_through_json() -> None:
    profile = credit.SegmentProfile(2, "Renters, younger", 500, 0.85, {"income": 2.6}, 2.5)
    segmentation = credit.Segmentation({2: profile}, 0.78)
    again = credit.Segmentation.from_dict(json.loads(json.dumps(segmentation.to_dict())))
    assert again == segmentation
    assert again.assign(2, "3").segment_name == "Renters, younger"


@pytest.mark.parametrize("given", [None, 17, "a" * 128])
def test_applicant_id_is_optional_text(given: object) -> None:
    applicant = credit.Applicant.model_validate({**APPLICANT, "applicant_id": given})
    assert applicant.applicant_id == (None if given is None else str(given))
    # The model service re-validates what the entry service sends.
    assert credit.Applicant.model_validate(applicant.model_dump()) == applicant


def test_overlong_applicant_id_is_refused() -> None:
    with pytest.raises(ValidationError):
        credit.Applicant.model_validate({**APPLICANT, "applicant_id": "a" * 129})


def _factor(feature: str, value: object, contribution: float) -> Factor:
    direction = "raises" if contribution > 0 else "lowers"
    return Factor(feature=feature, value=value, direction=direction, contribution=contribution)


@pytest.mark.parametrize(
    ("factor", "sentence"),
    [
        (_factor("reports", 2, -1.1), "2 derogatory reports lowered the approval odds (-1.10)"),
        (_factor("reports", 1, -0.6), "1 derogatory report lowered the approval odds (-0.60)"),
        (_factor("reports", 0, 0.45), "no derogatory reports raised the approval odds (+0.45)"),
        (_factor("income", 1.8, -0.3), "income $18,000 lowered the approval odds (-0.30)"),
        (_factor("age", 37.7, 0.1), "age 37.7 raised the approval odds (+0.10)"),
        (_factor("owner", True, 0.2), "owning a home raised the approval odds (+0.20)"),
        (_factor("owner", False, -0.2), "not owning a home lowered the approval odds (-0.20)"),
        (_factor("selfemp", True, -0.4), "being self-employed lowered the approval odds (-0.40)"),
        (_factor("dependents", 3, -0.1), "3 dependents lowered the approval odds (-0.10)"),
        (
            _factor("months", 54, 0.05),
            "54 months at the current address raised the approval odds (+0.05)",
        ),
        (_factor("majorcards", 0, -0.8), "no major credit card lowered the approval odds (-0.80)"),
        (_factor("active", 1, 0.3), "1 active credit account raised the approval odds (+0.30)"),
        (_factor("active", 0, -1.2), "no active credit accounts lowered the approval odds (-1.20)"),
        (_factor("score", 7, 0.3), "score 7 raised the approval odds (+0.30)"),
    ],
)
def test_factor_reasons_read_as_sentences(factor: Factor, sentence: str) -> None:
    assert credit.factor_reason(factor) == sentence


#: Largest |contribution| first, as the explainer gives them.
FACTORS = [
    _factor("reports", 3, -1.1),
    _factor("income", 4.52, 0.9),
    _factor("active", 0, -0.7),
    _factor("majorcards", 0, -0.2),
    _factor("owner", True, 0.15),
    _factor("age", 37.7, -0.1),
]


def _explained(p: float) -> credit.ApprovalScore:
    return credit.ApprovalScore(
        approval_probability=p, threshold=0.7, model_version="9", factors=FACTORS
    )


def test_a_decline_is_explained_by_what_lowered_the_probability() -> None:
    applicant = credit.Applicant.model_validate(APPLICANT)
    evaluation = credit.decide(applicant, _segment(), _explained(0.2))
    assert evaluation.reasons == [
        "approval probability 0.20 is below the required 0.70",
        "3 derogatory reports lowered the approval odds (-1.10)",
        "no active credit accounts lowered the approval odds (-0.70)",
        "no major credit card lowered the approval odds (-0.20)",
    ]
    assert evaluation.factors == FACTORS[: credit.TOP_FACTORS]


def test_an_approval_is_explained_by_what_raised_the_probability() -> None:
    applicant = credit.Applicant.model_validate(APPLICANT)
    cautious = _segment(rate=0.22, overall=0.78)
    evaluation = credit.decide(applicant, cautious, _explained(0.95))
    assert evaluation.eligible
    assert evaluation.reasons[0] == "approval probability 0.95 meets the required 0.80"
    assert "a stricter threshold applies" in evaluation.reasons[1]
    assert evaluation.reasons[2:] == [
        "income $45,200 raised the approval odds (+0.90)",
        "owning a home raised the approval odds (+0.15)",
    ]


def test_without_factors_the_rules_still_give_the_reasons() -> None:
    applicant = credit.Applicant.model_validate({**APPLICANT, "reports": 3, "active": 0})
    evaluation = credit.decide(applicant, _segment(median=5.0), _approval(0.2))
    assert evaluation.factors == []
    assert evaluation.reasons[1:] == [
        "3 derogatory reports",
        "income $45,200 below the segment median $50,000",
        "no active credit accounts",
    ]


@pytest.fixture(scope="module")
def approval_model() -> tuple[fastpath.CompiledPipeline, LinearExplainer]:
    data = load_credit()
    pipeline = credit_training.build_approval_pipeline(1.0, 0).fit(data.features, data.target)
    compiled, reason = fastpath.compile_pipeline(pipeline)
    assert compiled is not None, reason
    return compiled, LinearExplainer.from_pipeline(pipeline, data.features)


def test_score_approval_with_an_explainer_gives_every_factor(approval_model) -> None:
    predictor, explainer = approval_model
    applicants = [
        credit.Applicant.model_validate(APPLICANT),
        credit.Applicant.model_validate(
            {**APPLICANT, "reports": 3, "income": 1.8, "active": 0, "majorcards": 0}
        ),
    ]
    plain = credit.score_approval(predictor, applicants, 0.7, "9")
    explained = credit.score_approval(predictor, applicants, 0.7, "9", explainer=explainer)
    assert all(a.factors == [] for a in plain)
    for before, after in zip(plain, explained, strict=True):
        assert after.approval_probability == before.approval_probability
        assert {f.feature for f in after.factors} <= set(credit.FEATURES)
        sizes = [abs(f.contribution) for f in after.factors]
        assert sizes == sorted(sizes, reverse=True)
        for direction in ("raises", "lowers"):
            assert len([f for f in after.factors if f.direction == direction]) <= 3
    # The evaluation's factors are the overall top ones.
    top = explainer.top_factors(credit.columns(applicants), credit.TOP_FACTORS, applicants)
    assert [after.factors[: credit.TOP_FACTORS] for after in explained] == top
    assert credit.TOP_FACTORS <= credit.REASON_FACTORS
    reports = {f.feature: f for f in explained[1].factors}["reports"]
    assert (reports.value, reports.direction) == (3, "lowers")  # MONOTONIC: reports lower it
    # Across the process boundary (JSON), values keep their types.
    assessment = credit.CreditAssessment(segment=_segment(), approval=explained[1])
    back = credit.CreditAssessment.model_validate_json(assessment.model_dump_json())
    assert back == assessment
    assert {f.feature: f.value for f in back.approval.factors}["owner"] is True
    # The decision for the risky applicant: only what lowered the probability, in words.
    evaluation = credit.decide(applicants[1], _segment(), back.approval)
    assert not evaluation.eligible
    assert evaluation.reasons[1] == credit.factor_reason(
        next(f for f in back.approval.factors if f.direction == "lowers")
    )
    assert all("lowered the approval odds" in r for r in evaluation.reasons[1:])
    assert 1 <= len(evaluation.reasons[1:]) <= credit.REASON_FACTORS
