"""What a reload keeps: the replaced champion stays loaded (standby), so a rollback is a swap."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from models.registry import ServedModel
from models.settings import ModelSettings
from serving import bundles


class Aliases:
    """Fake registry: which version each alias points to, and which versions were loaded."""

    def __init__(self) -> None:
        self.champion: str = "1"
        self.challenger: str | None = None
        self.loaded: list[str] = []

    def load(self, name: str, alias: str, settings: Any, *, reuse: Any = ()) -> ServedModel:
        version = self.champion if alias == "champion" else self.challenger
        for model in reuse:
            if model is not None and model.version == version:
                return dataclasses.replace(model, alias=alias)
        assert version is not None
        self.loaded.append(version)
        return ServedModel(name, alias, version, "run", "src", {}, {}, model=None)

    def challenger_of(self, name: str, settings: Any, reuse: Any, starting: bool) -> Any:
        if self.challenger is None or self.challenger == self.champion:
            return None
        return self.load(name, "challenger", settings, reuse=reuse)


@pytest.fixture
def aliases(monkeypatch: pytest.MonkeyPatch) -> Aliases:
    fake = Aliases()
    monkeypatch.setattr(bundles.registry, "load", fake.load)
    monkeypatch.setattr(bundles, "_challenger", fake.challenger_of)
    return fake


def test_promotion_then_rollback_loads_each_version_once(aliases: Aliases) -> None:
    settings = ModelSettings()
    bundle = bundles.ChurnBundle.load(None, settings)
    aliases.challenger = "2"
    bundle = bundles.ChurnBundle.load(bundle, settings)
    assert bundle.versions == ("1", "2") and bundle.standby is None
    aliases.champion, aliases.challenger = "2", None  # the challenger is promoted
    bundle = bundles.ChurnBundle.load(bundle, settings)
    assert bundle.versions == ("2", None)
    assert bundle.standby is not None and bundle.standby.version == "1"
    aliases.champion = "1"  # rollback
    bundle = bundles.ChurnBundle.load(bundle, settings)
    assert bundle.versions == ("1", None) and bundle.champion.alias == "champion"
    assert bundle.standby is not None and bundle.standby.version == "2"
    assert aliases.loaded == ["1", "2"]  # nothing loaded twice
