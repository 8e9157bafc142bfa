"""What each model worker serves, as one immutable bundle per reload (`serving/live.py`).

A bundle holds the champion and, when the registry has one, the challenger; `versions` is the
tuple of versions it holds, compared with `watch_*` (what the aliases point to now) to decide
whether to reload. Loading reuses what the previous bundle already holds, so promoting the
challenger to champion swaps without loading anything, and so does a rollback: the champion a
promotion replaced stays in memory as the bundle's `standby` (one extra model per family).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from models import churn, credit, registry
from models.registry import ServedModel
from models.settings import ModelSettings

log = logging.getLogger("clientinsight.reload")


def _challenger(
    name: str, settings: ModelSettings, reuse: Sequence[ServedModel | None], starting: bool
) -> ServedModel | None:
    """`name@challenger`, or None when there is none. At start-up a challenger that fails to
    load is skipped (the champion must serve); on reload the failure is reported and retried."""
    client = registry.configure_mlflow(settings)
    version = registry.alias_version(client, name, settings.challenger_alias)
    if version is None or version == registry.alias_version(client, name, settings.serving_alias):
        return None  # none, or the champion itself: nothing to compare
    try:
        return registry.load(name, settings.challenger_alias, settings, reuse=reuse)
    except Exception:
        if not starting:
            raise
        log.exception("%s@%s did not load; serving without it", name, settings.challenger_alias)
        return None


@dataclass(frozen=True)
class ChurnBundle:
    champion: ServedModel
    challenger: ServedModel | None
    #: The champion this one replaced, kept loaded so that a rollback is a swap.
    standby: ServedModel | None = None

    @property
    def versions(self) -> Hashable:
        return (self.champion.version, self.challenger.version if self.challenger else None)

    @classmethod
    def load(cls, previous: ChurnBundle | None, settings: ModelSettings) -> ChurnBundle:
        reuse = (previous.champion, previous.challenger, previous.standby) if previous else ()
        champion = registry.load(churn.MODEL_NAME, settings.serving_alias, settings, reuse=reuse)
        standby = previous.standby if previous else None
        if previous and previous.champion.version != champion.version:
            standby = previous.champion
        return cls(
            champion=champion,
            challenger=_challenger(churn.MODEL_NAME, settings, reuse, starting=previous is None),
            standby=standby,
        )


@dataclass(frozen=True)
class CreditPair:
    """The two credit models that decide together, and the segment version's profiles."""

    segment: ServedModel
    segmentation: credit.Segmentation
    approval: ServedModel

    @classmethod
    def of(
        cls, segment: ServedModel, approval: ServedModel, previous: Sequence[CreditPair]
    ) -> CreditPair:
        for pair in previous:  # the profiles belong to the segment version: reuse them with it
            if pair.segment.version == segment.version:
                return cls(segment, pair.segmentation, approval)
        profiles = registry.load_json_artifact(segment, "segments.json")
        return cls(segment, credit.Segmentation.from_dict(profiles), approval)

    @property
    def versions(self) -> tuple[str, str]:
        return (self.segment.version, self.approval.version)

    def assess(self, applicants: Sequence[credit.Applicant]) -> list[credit.CreditAssessment]:
        """Both models on one batch: segment and approval probability per applicant."""
        segments = credit.assign_segments(
            self.segment.predictor, self.segmentation, applicants, self.segment.version
        )
        approval = self.approval
        approvals = credit.score_approval(
            approval.predictor, applicants, approval.threshold, approval.version, approval.explainer
        )
        return [
            credit.CreditAssessment(segment=s, approval=a)
            for s, a in zip(segments, approvals, strict=True)
        ]


@dataclass(frozen=True)
class CreditBundle:
    champion: CreditPair
    #: Either model's challenger with the other's champion; None when neither has one.
    challenger: CreditPair | None
    #: The champion pair this one replaced, kept loaded so that a rollback is a swap.
    standby: CreditPair | None = None

    @property
    def versions(self) -> Hashable:
        return tuple(None if p is None else p.versions for p in (self.champion, self.challenger))

    @classmethod
    def load(cls, previous: CreditBundle | None, settings: ModelSettings) -> CreditBundle:
        held = (previous.champion, previous.challenger, previous.standby) if previous else ()
        pairs = [p for p in held if p]
        reuse = [m for p in pairs for m in (p.segment, p.approval)]
        starting = previous is None
        segment = registry.load(credit.SEGMENT_MODEL, settings.serving_alias, settings, reuse=reuse)
        approval = registry.load(
            credit.APPROVAL_MODEL, settings.serving_alias, settings, reuse=reuse
        )
        champion = CreditPair.of(segment, approval, pairs)
        challenger_segment = _challenger(credit.SEGMENT_MODEL, settings, reuse, starting)
        challenger_approval = _challenger(credit.APPROVAL_MODEL, settings, reuse, starting)
        challenger = None
        if challenger_segment or challenger_approval:
            challenger = CreditPair.of(
                challenger_segment or segment, challenger_approval or approval, [champion, *pairs]
            )
        standby = previous.standby if previous else None
        if previous and previous.champion.versions != champion.versions:
            standby = previous.champion
        return cls(champion, challenger, standby)


def watch(settings: ModelSettings, *names: str) -> Callable[[], Hashable]:
    """What the aliases point to now, shaped like `versions` of the bundle serving `names`.

    One registry client for the worker's life: a poll is two to four cheap lookups.
    """
    client = registry.configure_mlflow(settings)

    def versions(alias: str) -> tuple[str | None, ...]:
        return tuple(registry.alias_version(client, name, alias) for name in names)

    def now() -> Hashable:
        champion = versions(settings.serving_alias)
        challenger = tuple(  # the champion itself as challenger is no challenger (`_challenger`)
            None if c == v else c
            for c, v in zip(versions(settings.challenger_alias), champion, strict=True)
        )
        if len(names) == 1:
            return (champion[0], challenger[0])
        if all(v is None for v in challenger):
            return (champion, None)
        # Missing challengers are filled with the champion, as CreditBundle.load does.
        return (champion, tuple(c or v for c, v in zip(challenger, champion, strict=True)))

    return now
