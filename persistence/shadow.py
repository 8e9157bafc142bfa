"""How a challenger's shadow scores compare with the champion's answers on the same live rows.

Each challenger row points at the champion row it shadows (`shadow_of`), so the comparison is
an exact join, not a guess by customer and time. Figures are per (champion version,
challenger version) pair: after a reload, old and new pairs are reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, case, func, select

from persistence.tables import predictions


@dataclass(frozen=True)
class ShadowComparison:
    """Champion vs challenger on the rows both scored."""

    model_name: str
    champion_version: str
    challenger_version: str
    rows: int
    #: Share of rows where both gave the same label (churn: risk band; credit: eligible).
    label_agreement: float
    champion_mean_score: float | None
    challenger_mean_score: float | None
    #: Mean and largest |challenger score - champion score|.
    mean_abs_score_delta: float | None
    max_abs_score_delta: float | None
    first_at: datetime
    last_at: datetime

    @property
    def mean_score_delta(self) -> float | None:
        """Challenger minus champion, on average (positive: the challenger scores higher)."""
        if self.champion_mean_score is None or self.challenger_mean_score is None:
            return None
        return self.challenger_mean_score - self.champion_mean_score


def compare(
    engine: Engine, model_name: str, since: datetime | None = None
) -> list[ShadowComparison]:
    """Every (champion version, challenger version) pair of `model_name` seen since `since`."""
    challenger = predictions.alias("challenger")
    champion = predictions.alias("champion")
    delta = func.abs(challenger.c.score - champion.c.score)
    same_label = case((challenger.c.label == champion.c.label, 1), else_=0)
    conditions = [challenger.c.role == "challenger", challenger.c.model_name == model_name]
    if since is not None:
        conditions.append(challenger.c.created_at >= since)
    query = (
        select(
            champion.c.model_version,
            challenger.c.model_version,
            func.count(),
            func.sum(same_label),
            func.avg(champion.c.score),
            func.avg(challenger.c.score),
            func.avg(delta),
            func.max(delta),
            func.min(challenger.c.created_at),
            func.max(challenger.c.created_at),
        )
        .select_from(challenger.join(champion, champion.c.id == challenger.c.shadow_of))
        .where(and_(*conditions))
        .group_by(champion.c.model_version, challenger.c.model_version)
        .order_by(func.min(challenger.c.created_at))
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        ShadowComparison(
            model_name=model_name,
            champion_version=str(champion_version),
            challenger_version=str(challenger_version),
            rows=int(count),
            label_agreement=int(agreeing or 0) / int(count),
            champion_mean_score=_float(champion_mean),
            challenger_mean_score=_float(challenger_mean),
            mean_abs_score_delta=_float(mean_delta),
            max_abs_score_delta=_float(max_delta),
            first_at=first_at,
            last_at=last_at,
        )
        for (
            champion_version,
            challenger_version,
            count,
            agreeing,
            champion_mean,
            challenger_mean,
            mean_delta,
            max_delta,
            first_at,
            last_at,
        ) in rows
    ]


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
