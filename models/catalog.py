"""The model catalog: every family the project serves. The only place that names them.

Adding a family is one line here (`docs/adding-a-model.md`); every surface reads this tuple.
"""

from __future__ import annotations

import importlib
from functools import cache

from models import balance, churn, credit
from models.family import Family, FamilyError
from models.settings import ModelSettings, get_settings

FAMILIES: tuple[Family, ...] = (churn.FAMILY, credit.FAMILY, balance.FAMILY)


def checked(families: tuple[Family, ...] = FAMILIES) -> tuple[Family, ...]:
    """The families, each declaration checked, and no name, route or registered model twice;
    a `FamilyError` naming the family and the problem otherwise."""
    seen: dict[str, str] = {}
    for family in families:
        family.check()
        for key in (
            f"family {family.name}",
            f"decision {family.recording.decision}",
            *(f"registered model {m}" for m in family.models),
        ):
            if key in seen:
                raise FamilyError(f"model family {family.name!r}: {key} is also {seen[key]}'s")
            seen[key] = family.name
    return families


def load(settings: ModelSettings | None = None) -> tuple[Family, ...]:
    """The families named by `CLIENTINSIGHT_CATALOG` (`module:attribute`), checked; a
    `FamilyError` (a ValueError) naming what is wrong otherwise."""
    spec = (settings or get_settings()).catalog
    module_name, _, attribute = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute or "FAMILIES")
    except (ImportError, AttributeError) as exc:
        raise FamilyError(f"CLIENTINSIGHT_CATALOG={spec!r}: cannot import it ({exc})") from None
    if not isinstance(found, tuple) or not all(isinstance(f, Family) for f in found) or not found:
        raise FamilyError(f"CLIENTINSIGHT_CATALOG={spec!r} is not a tuple of Family declarations")
    return checked(found)


@cache
def current() -> tuple[Family, ...]:
    """This process's families (`load()` once): what serving and the training CLI use."""
    return load()


def family(name: str, families: tuple[Family, ...] | None = None) -> Family:
    """The family called `name`."""
    for candidate in families or current():
        if candidate.name == name:
            return candidate
    raise KeyError(
        f"no model family {name!r}; the catalog has "
        + ", ".join(f.name for f in families or current())
    )


def serving(model: str, families: tuple[Family, ...] | None = None) -> Family:
    """The family whose decision `model` (a registered model name) takes part in."""
    for candidate in families or current():
        if model in candidate.models:
            return candidate
    served = ", ".join(m for f in families or current() for m in f.models)
    raise KeyError(f"unknown model {model!r}; served models: {served}")


def by_decision(decision: str, families: tuple[Family, ...] | None = None) -> Family:
    """The family whose stored rows carry `decision` as their model name."""
    for candidate in families or current():
        if candidate.recording.decision == decision:
            return candidate
    decisions = ", ".join(f.recording.decision for f in families or current())
    raise KeyError(f"unknown decision {decision!r}; stored decisions: {decisions}")
