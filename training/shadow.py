"""`python -m training shadow-report DECISION`: is the challenger ready to be promoted?

Two kinds of evidence side by side, per (champion version, challenger version):
- live traffic (`persistence/shadow.py`): how often the challenger gave the same label, and
  how far its scores are from the champion's, on the requests it shadowed;
- the registry: each version's hold-out metrics from its training run, and the difference.
Live traffic has no outcome yet, so only the registry can say which version is more accurate;
the live figures say how differently the challenger would treat today's customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.table import Table

from models import catalog
from models.registry import configure_mlflow, key_metrics
from models.settings import ModelSettings, get_settings
from persistence.db import make_engine
from persistence.settings import get_settings as get_persistence_settings
from persistence.shadow import ShadowComparison, compare
from training.promotion import NoSharedEvaluationSet, evaluate
from training.promotion import gate as promotion_gate


@dataclass(frozen=True)
class ShadowReport:
    live: ShadowComparison
    #: Hold-out metrics of the champion and challenger versions' training runs.
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    #: The promotion gate's metric, champion's and challenger's figures and the row count, on
    #: the hold-out rows neither trained on (None when they share too few).
    gate: tuple[str, float, float, int] | None

    def metric_deltas(self) -> dict[str, float]:
        """Challenger minus champion, for every metric both runs logged."""
        shared = self.champion_metrics.keys() & self.challenger_metrics.keys()
        return {k: self.challenger_metrics[k] - self.champion_metrics[k] for k in sorted(shared)}


def reports(
    decision: str,
    hours: float | None = None,
    settings: ModelSettings | None = None,
    database_url: str | None = None,
) -> list[ShadowReport]:
    """One report per (champion, challenger) version pair seen in the period."""
    settings = settings or get_settings()
    engine = make_engine(database_url or get_persistence_settings().database_url)
    since = datetime.now(UTC) - timedelta(hours=hours) if hours else None
    try:
        live = compare(engine, decision, since)
    finally:
        engine.dispose()
    client = configure_mlflow(settings)
    # Whose versions the decision's `model_version` column holds (the shadow rows' versions).
    model = catalog.by_decision(decision).recording.primary_model
    cache: dict[str, dict[str, float]] = {}

    def metrics(version: str) -> dict[str, float]:
        if version not in cache:
            run = client.get_run(str(client.get_model_version(model, version).run_id))
            cache[version] = key_metrics(run)
        return cache[version]

    def gate(champion: str, challenger: str) -> tuple[str, float, float, int] | None:
        try:
            scores, rows = evaluate(model, [challenger, champion], settings)
        except NoSharedEvaluationSet:
            return None
        return promotion_gate(model).metric, scores[champion], scores[challenger], rows

    return [
        ShadowReport(
            c,
            metrics(c.champion_version),
            metrics(c.challenger_version),
            gate(c.champion_version, c.challenger_version),
        )
        for c in live
    ]


def report(decision: str, hours: float | None = None) -> list[Table]:
    """The reports as terminal tables."""
    tables = []
    for found in reports(decision, hours):
        live = found.live
        table = Table(
            title=f"{decision}: champion v{live.champion_version} vs challenger "
            f"v{live.challenger_version} ({live.rows} shadowed rows, "
            f"{live.first_at:%Y-%m-%d %H:%M} to {live.last_at:%H:%M})"
        )
        for column in ("figure", "champion", "challenger", "delta"):
            table.add_column(column, justify="left" if column == "figure" else "right")
        table.add_row("same label (live)", "", "", f"{live.label_agreement:.1%}")
        table.add_row(
            "mean score (live)",
            _number(live.champion_mean_score),
            _number(live.challenger_mean_score),
            _number(live.mean_score_delta, signed=True),
        )
        table.add_row("mean |score delta| (live)", "", "", _number(live.mean_abs_score_delta))
        table.add_row("max |score delta| (live)", "", "", _number(live.max_abs_score_delta))
        if found.gate is None:
            table.add_row("promotion gate", "", "", "too few shared hold-out rows")
        else:
            metric, champion_score, challenger_score, rows = found.gate
            table.add_row(
                f"{metric} on {rows} shared rows (gate)",
                _number(champion_score),
                _number(challenger_score),
                _number(challenger_score - champion_score, signed=True),
            )
        deltas = found.metric_deltas()
        for name, delta in deltas.items():
            table.add_row(
                f"{name} (training run)",
                _number(found.champion_metrics[name]),
                _number(found.challenger_metrics[name]),
                _number(delta, signed=True),
            )
        tables.append(table)
    return tables


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
