"""What a reload keeps, for any family: the replaced champion stays loaded (standby), so a
rollback is a swap; a challenger of one model serves with the other models' champions; and
`watch` says what `load` would hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from models.registry import ServedModel
from models.settings import ModelSettings
from serving import bundles
from tests.support.families import toy_family


class Aliases:
    """Fake registry: which version each model's aliases point to, and what was loaded."""

    def __init__(self, *names: str) -> None:
        self.champion: dict[str, str] = dict.fromkeys(names, "1")
        self.challenger: dict[str, str | None] = dict.fromkeys(names)
        self.loaded: list[tuple[str, str]] = []

    def alias_version(self, client: Any, name: str, alias: str) -> str | None:
        return self.champion[name] if alias == "champion" else self.challenger[name]

    def load(self, name: str, alias: str, settings: Any, *, reuse: Any = ()) -> ServedModel:
        version = self.alias_version(None, name, alias)
        assert version is not None
        for model in reuse:
            if (model.name, model.version) == (name, version):
                return dataclasses.replace(model, alias=alias)
        self.loaded.append((name, version))
        return ServedModel(name, alias, version, "run", "src", {}, {}, model=None)


@dataclass(frozen=True)
class Pair:
    models: tuple[ServedModel, ...]

    def score(self, records: Sequence[Any]) -> list[Any]:
        return []


def _assemble(models: Mapping[str, ServedModel], previous: Sequence[Any]) -> Pair:
    return Pair(tuple(models.values()))


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> ModelSettings:
    monkeypatch.setattr(bundles.registry, "configure_mlflow", lambda settings: None)
    return ModelSettings()


def _fake(monkeypatch: pytest.MonkeyPatch, *names: str) -> Aliases:
    fake = Aliases(*names)
    monkeypatch.setattr(bundles.registry, "load", fake.load)
    monkeypatch.setattr(bundles.registry, "alias_version", fake.alias_version)
    return fake


def test_promotion_then_rollback_loads_each_version_once(
    monkeypatch: pytest.MonkeyPatch, settings: ModelSettings
) -> None:
    family = dataclasses.replace(toy_family(), models=("toy",), assemble=_assemble)
    aliases = _fake(monkeypatch, "toy")
    bundle = bundles.load(family, None, settings)
    aliases.challenger["toy"] = "2"
    bundle = bundles.load(family, bundle, settings)
    assert bundle.versions == (("1",), ("2",)) and bundle.standby is None
    aliases.champion["toy"], aliases.challenger["toy"] = "2", None  # the challenger is promoted
    bundle = bundles.load(family, bundle, settings)
    assert bundle.versions == (("2",), None)
    assert bundle.standby is not None and bundle.standby.models[0].version == "1"
    aliases.champion["toy"] = "1"  # rollback
    bundle = bundles.load(family, bundle, settings)
    assert bundle.versions == (("1",), None) and bundle.champion.models[0].alias == "champion"
    assert bundle.standby is not None and bundle.standby.models[0].version == "2"
    assert aliases.loaded == [("toy", "1"), ("toy", "2")]  # nothing loaded twice
    described = bundles.describe(family, bundle, "challenger")
    assert [(d["version"], d["standby_version"]) for d in described] == [("1", "2")]


def test_one_models_challenger_serves_with_the_others_champions(
    monkeypatch: pytest.MonkeyPatch, settings: ModelSettings
) -> None:
    family = dataclasses.replace(toy_family(), models=("seg", "app"), assemble=_assemble)
    family = dataclasses.replace(
        family, recording=dataclasses.replace(family.recording, primary_model="app")
    )
    aliases = _fake(monkeypatch, "seg", "app")
    watch = bundles.watch(family, settings)
    bundle = bundles.load(family, None, settings)
    assert bundle.versions == watch() == (("1", "1"), None)
    aliases.challenger["app"] = "3"
    assert watch() != bundle.versions  # a reload is due
    bundle = bundles.load(family, bundle, settings)
    assert bundle.versions == watch() == (("1", "1"), ("1", "3"))
    assert bundle.challenger is not None
    assert [m.alias for m in bundle.challenger.models] == ["champion", "challenger"]
    # Listed once each: the challenger's champion half is the champion's own.
    described = bundles.describe(family, bundle, "challenger")
    assert [(d["name"], d["version"]) for d in described] == [
        ("seg", "1"),
        ("app", "1"),
        ("app", "3"),
    ]
    aliases.challenger["seg"] = "1"  # the champion itself as challenger is no challenger
    assert watch() == bundle.versions
