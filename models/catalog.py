"""The model catalog: every family the project serves. The only place that names them.

Adding a family is one line here (`docs/adding-a-model.md`); every surface reads this tuple.
"""

from __future__ import annotations

from models import churn, credit
from models.family import Family, FamilyError

FAMILIES: tuple[Family, ...] = (churn.FAMILY, credit.FAMILY)


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


def family(name: str, families: tuple[Family, ...] = FAMILIES) -> Family:
    """The family called `name`."""
    for candidate in families:
        if candidate.name == name:
            return candidate
    raise KeyError(
        f"no model family {name!r}; the catalog has {', '.join(f.name for f in families)}"
    )


def serving(model: str, families: tuple[Family, ...] = FAMILIES) -> Family:
    """The family whose decision `model` (a registered model name) takes part in."""
    for candidate in families:
        if model in candidate.models:
            return candidate
    served = ", ".join(m for f in families for m in f.models)
    raise KeyError(f"unknown model {model!r}; served models: {served}")


def by_decision(decision: str, families: tuple[Family, ...] = FAMILIES) -> Family:
    """The family whose stored rows carry `decision` as their model name."""
    for candidate in families:
        if candidate.recording.decision == decision:
            return candidate
    decisions = ", ".join(f.recording.decision for f in families)
    raise KeyError(f"unknown decision {decision!r}; stored decisions: {decisions}")
