"""The credit contract and decision rule: fields, leakage guard, segment names, reasons."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from models import credit

APPLICANT = {
    "applicant_id": "a-1",
    "reports": 0,
    "age": 37.7,
    "income": 4.52,
    "owner": "yes",
    "selfemp": "no",
    "dependents": 3,
    "months": 54,
    "majorcards": 1,
    "active": 12,
}


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
    ("field", "value"), [("age", 0.5), ("income", -1), ("reports", -2), ("owner", "perhaps")]
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
