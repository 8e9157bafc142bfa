"""What a family's model worker serves, as one immutable bundle per reload (`serving/live.py`).

A bundle holds the champion scorer and, when the registry has a challenger for any of the
family's models, the challenger scorer: each model's challenger with the others' champions.
`versions` (the champion's versions, and the challenger's or None) is compared with `watch`
(what the aliases point to now) to decide whether to reload. Loading reuses what the previous
bundle already holds, so promoting the challenger to champion swaps without loading anything,
and so does a rollback: the champion a promotion replaced stays in memory as the bundle's
`standby` (one extra scorer per family). The rules are the same for every family; what a
scorer is comes from the family's declaration (`Family.assemble`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from models import registry
from models.family import Family, Scorer
from models.registry import ServedModel
from models.settings import ModelSettings

log = logging.getLogger("clientinsight.reload")

#: Per model, in the family's order: one version each.
Versions = tuple[str, ...]


def _versions(scorer: Scorer) -> Versions:
    return tuple(model.version for model in scorer.models)


@dataclass(frozen=True)
class Bundle:
    champion: Scorer
    #: Some model's challenger with the other models' champions; None when none has one.
    challenger: Scorer | None = None
    #: The champion this one replaced, kept loaded so that a rollback is a swap.
    standby: Scorer | None = None

    @property
    def versions(self) -> tuple[Versions, Versions | None]:
        challenger = None if self.challenger is None else _versions(self.challenger)
        return (_versions(self.champion), challenger)

    @property
    def held(self) -> list[Scorer]:
        return [s for s in (self.champion, self.challenger, self.standby) if s is not None]


def challenger_version(champion: str | None, challenger: str | None) -> str | None:
    """The challenger to shadow: none when there is none, or when it is the champion itself
    (nothing to compare). `load` and `watch` both decide with this rule."""
    return None if challenger is None or challenger == champion else challenger


def _challenger(
    name: str,
    settings: ModelSettings,
    client: Any,
    reuse: Sequence[ServedModel],
    starting: bool,
) -> ServedModel | None:
    """`name@challenger`, or None. At start-up a challenger that fails to load is skipped
    (the champion must serve); on reload the failure is reported and retried."""
    version = challenger_version(
        registry.alias_version(client, name, settings.serving_alias),
        registry.alias_version(client, name, settings.challenger_alias),
    )
    if version is None:
        return None
    try:
        return registry.load(name, settings.challenger_alias, settings, reuse=reuse)
    except Exception:
        if not starting:
            raise
        log.exception("%s@%s did not load; serving without it", name, settings.challenger_alias)
        return None


def load(family: Family, previous: Bundle | None, settings: ModelSettings) -> Bundle:
    """The bundle the aliases point to now, reusing every version `previous` holds."""
    assert family.assemble is not None  # Family.check
    held = previous.held if previous else []
    reuse = [model for scorer in held for model in scorer.models]
    champions = {
        name: registry.load(name, settings.serving_alias, settings, reuse=reuse)
        for name in family.models
    }
    champion = family.assemble(champions, held)
    client = registry.configure_mlflow(settings)
    starting = previous is None
    challengers = {
        name: _challenger(name, settings, client, reuse, starting) for name in family.models
    }
    challenger = None
    if any(challengers.values()):
        mixed = {name: challengers[name] or champions[name] for name in family.models}
        challenger = family.assemble(mixed, [champion, *held])
    standby = previous.standby if previous else None
    if previous and _versions(previous.champion) != _versions(champion):
        standby = previous.champion
    return Bundle(champion, challenger, standby)


def watch(family: Family, settings: ModelSettings) -> Callable[[], Hashable]:
    """What the aliases point to now, shaped like `Bundle.versions`.

    One registry client for the worker's life: a poll is two lookups per model.
    """
    client = registry.configure_mlflow(settings)

    def now() -> Hashable:
        champion = tuple(
            registry.alias_version(client, n, settings.serving_alias) for n in family.models
        )
        challenger = tuple(
            challenger_version(v, registry.alias_version(client, n, settings.challenger_alias))
            for n, v in zip(family.models, champion, strict=True)
        )
        if all(c is None for c in challenger):
            return (champion, None)
        # Models without a challenger take part with their champion, as `load` does.
        return (champion, tuple(c or v for c, v in zip(challenger, champion, strict=True)))

    return now


def describe(family: Family, bundle: Bundle, challenger_alias: str) -> list[dict[str, Any]]:
    """Each served version once, for `GET /models`: the champion's models, then the
    challenger's own (its champion halves are already listed); `standby_version` is the
    version of the same model kept loaded for a rollback."""
    standby = {m.name: m.version for m in bundle.standby.models} if bundle.standby else {}
    described: list[dict[str, Any]] = []
    for scorer in (bundle.champion, bundle.challenger):
        if scorer is None:
            continue
        for model in scorer.models:
            if scorer is bundle.challenger and model.alias != challenger_alias:
                continue
            extra = family.describe_extra(scorer, model) if family.describe_extra else {}
            described.append(
                {**model.describe(), **extra, "standby_version": standby.get(model.name)}
            )
    return described


def loaded_versions(family: Family, bundle: Bundle) -> dict[str, dict[str, str | None]]:
    """Per model, the version each role holds: `champion`, `challenger` (its own, not a
    champion it is paired with) and `standby` (kept for a rollback); None for an empty role."""

    def version(scorer: Scorer | None, name: str) -> str | None:
        if scorer is None:
            return None
        return next((m.version for m in scorer.models if m.name == name), None)

    out: dict[str, dict[str, str | None]] = {}
    for name in family.models:
        champion = version(bundle.champion, name)
        out[name] = {
            "champion": champion,
            "challenger": challenger_version(champion, version(bundle.challenger, name)),
            "standby": version(bundle.standby, name),
        }
    return out


def scorer_for(bundle: Bundle, model: str, version: str) -> Scorer | None:
    """The loaded scorer whose `model` is at `version` (champion first), or None."""
    for scorer in bundle.held:
        if any(m.name == model and m.version == version for m in scorer.models):
            return scorer
    return None
