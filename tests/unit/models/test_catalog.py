"""The catalog: every family once, found by name, model or decision; CLIENTINSIGHT_CATALOG
names another catalog, and a wrong one is refused with a message naming it."""

from __future__ import annotations

import dataclasses

import pytest

from models import catalog
from models.family import FamilyError
from models.settings import ModelSettings
from tests.support.families import toy_family


def test_the_catalog_serves_its_families() -> None:
    assert [f.name for f in catalog.FAMILIES] == ["churn", "credit", "balance"]
    assert catalog.checked() == catalog.FAMILIES


def test_lookups_by_name_model_and_decision() -> None:
    assert catalog.family("credit").verb == "evaluate"
    assert catalog.serving("credit-segment").name == "credit"
    assert catalog.by_decision("credit-evaluation").name == "credit"
    with pytest.raises(KeyError, match="unknown model 'nope'; served models: churn"):
        catalog.serving("nope")


def test_a_name_or_model_used_twice_is_refused() -> None:
    toy = toy_family("twin")
    twin = dataclasses.replace(
        toy,
        models=("churn",),
        recording=dataclasses.replace(toy.recording, primary_model="churn"),
        gates={"churn": toy.gates["toy-model"]},
    )
    with pytest.raises(FamilyError, match="model family 'twin': registered model churn is also"):
        catalog.checked((*catalog.FAMILIES, twin))
    with pytest.raises(FamilyError, match="family toy is also toy's"):
        catalog.checked((toy_family(), toy_family()))


def _settings(spec: str) -> ModelSettings:
    return ModelSettings.model_validate({"CLIENTINSIGHT_CATALOG": spec})


def test_another_catalog_can_be_named() -> None:
    [toy] = catalog.load(_settings("tests.support.families:CATALOG"))
    assert toy.name == "toy"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("no.such.module:FAMILIES", "cannot import it"),
        ("tests.support.families:NOPE", "cannot import it"),
        ("tests.support.families:TOY_MODEL", "is not a tuple of Family declarations"),
        ("tests.support.families:BROKEN", "gates: no promotion gate"),
    ],
)
def test_a_wrong_catalog_is_refused_by_name(spec: str, problem: str) -> None:
    with pytest.raises(FamilyError, match=problem):
        catalog.load(_settings(spec))
