"""A family's declaration is checked whole: each missing or inconsistent piece is named, with
the family, in one message."""

from __future__ import annotations

import dataclasses

import pytest

from models import balance, churn, credit
from models.family import Family, FamilyError, Recording
from tests.support.families import toy_family


@pytest.mark.parametrize("family", [churn.FAMILY, credit.FAMILY, balance.FAMILY])
def test_the_projects_families_are_complete(family: Family) -> None:
    assert family.check() is family


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"assemble": None}, "assemble: no way to build a scorer"),
        ({"gates": {}}, "gates: no promotion gate for 'toy-model'"),
        ({"training": None}, "training: no training entry point"),
        ({"models": ()}, "models: no registered model named"),
        ({"name": "Toy Family"}, "name: lower-case letters, digits and '-' only"),
        ({"records_field": ""}, "records_field"),
        ({"output_columns": ()}, "output_columns"),
        ({"feature_frame": None}, "file_columns: files need feature_frame or file_columns"),
        ({"column_aliases": {"X": "x", "W": "w"}}, "column_aliases: w are not fields"),
        ({"scored": churn.ChurnPrediction}, "decide: the worker's outputs differ from answers"),
    ],
)
def test_each_missing_piece_is_named(change: dict[str, object], named: str) -> None:
    broken = dataclasses.replace(toy_family(), **change)  # type: ignore[arg-type]
    with pytest.raises(FamilyError, match="model family") as refused:
        broken.check()
    assert named in str(refused.value)


def test_recording_fields_must_be_the_answers() -> None:
    recording = Recording("toy", "toy-model", "point_id", "score", "above")
    broken = dataclasses.replace(toy_family(), recording=recording)
    with pytest.raises(FamilyError, match=r"recording\.score_field: 'score' is not a field"):
        broken.check()
    other = dataclasses.replace(recording, score_field="probability", primary_model="nope")
    with pytest.raises(FamilyError, match="primary_model: 'nope' is not served"):
        dataclasses.replace(toy_family(), recording=other).check()


def test_routes_and_operations_come_from_name_and_verb() -> None:
    family = dataclasses.replace(toy_family("two-words"), verb="rate")
    assert (family.route, family.file_route) == ("/two-words/rate", "/two-words/rate_file")
    assert family.operation == "two_words_rate"
    assert (credit.FAMILY.route, credit.FAMILY.file_route) == (
        "/credit/evaluate",
        "/credit/evaluate_file",
    )
