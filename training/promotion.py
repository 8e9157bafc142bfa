"""Gated promotion: `@champion` moves only to a version at least as good on the same data.

Both versions are scored on the rows neither trained on: the intersection of their runs' stored
evaluation sets (`evaluation/holdout.parquet`, with the target). Each model's gate is declared
by its family (`models/gates.py`: ROC AUC for the probability models, silhouette for a
segmentation, RMSE for a regression). Too few shared rows (runs on other samples or seeds)
and the gate refuses to judge. A refused promotion changes nothing and reports both figures;
`force` overrides it. Every promotion is recorded as version tags: who, when, the previous
holder of the alias, both figures and the delta. Rollback is promoting the previous version.
"""

from __future__ import annotations

import dataclasses
import getpass
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models import catalog
from models.family import Gate
from models.registry import alias_version, configure_mlflow, key_metrics
from models.settings import ModelSettings, get_settings


def gate(name: str) -> Gate:
    """The promotion gate the catalog declares for registered model `name`."""
    try:
        return catalog.serving(name).gates[name]
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def served_models() -> list[str]:
    return [name for family in catalog.current() for name in family.models]


class PromotionRefused(Exception):
    """The candidate scored below the current holder of the alias."""


@dataclass(frozen=True)
class Promotion:
    name: str
    alias: str
    version: str
    previous: str | None
    metric: str
    candidate_score: float | None
    previous_score: float | None
    forced: bool
    #: How many hold-out rows (shared by both versions) the figures come from.
    evaluation_rows: int = 0
    #: The promoted version was the challenger: that alias was removed (shadowing stops).
    cleared_challenger: bool = False
    #: The candidate scored worse than the previous holder by the gate's rule (forced).
    worse: bool = False

    @property
    def delta(self) -> float | None:
        if self.candidate_score is None or self.previous_score is None:
            return None
        return self.candidate_score - self.previous_score


#: Fewer shared hold-out rows than this and the gate cannot judge (refused unless forced).
MIN_SHARED_ROWS = 100


class NoSharedEvaluationSet(PromotionRefused):
    """The two versions' hold-out sets share too few rows for a fair comparison."""


def evaluation_rows(name: str, versions: list[str], settings: ModelSettings) -> Any:
    """The rows none of `versions` trained on: the intersection of their runs' stored hold-out
    sets (`evaluation/holdout.parquet`). With the same data and seed that is the whole hold-out
    set; a run on other rows (another seed, a sample) shares fewer, and a champion must never
    be judged on rows it was trained on."""
    import mlflow.artifacts
    import pandas as pd

    client = configure_mlflow(settings)
    shared: pd.DataFrame | None = None
    for version in versions:
        run_id = client.get_model_version(name, version).run_id
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="evaluation/holdout.parquet"
        )
        frame = pd.read_parquet(local)
        shared = frame if shared is None else shared.merge(frame.drop_duplicates(), how="inner")
    assert shared is not None
    return shared


def evaluate(
    name: str, versions: list[str], settings: ModelSettings
) -> tuple[dict[str, float], int]:
    """Each version's gate metric on the rows none of them trained on, and how many rows."""
    import mlflow.sklearn

    frame = evaluation_rows(name, versions, settings)
    if len(frame) < MIN_SHARED_ROWS:
        raise NoSharedEvaluationSet(
            f"versions {' and '.join(versions)} of {name} share {len(frame)} hold-out rows "
            f"(at least {MIN_SHARED_ROWS} are needed to compare them fairly): retrain the "
            "candidate with the same data and --seed as the champion, or --force"
        )
    scores = {
        v: gate(name).score(mlflow.sklearn.load_model(f"models:/{name}/{v}"), frame)
        for v in versions
    }
    return scores, len(frame)


def promote(
    name: str,
    version: str,
    alias: str | None = None,
    force: bool = False,
    settings: ModelSettings | None = None,
) -> Promotion:
    """Point `alias` (default: the serving alias) at `version`, through the gate for the
    serving alias; raises PromotionRefused, changing nothing, when the candidate is worse."""
    rule = gate(name)
    settings = settings or get_settings()
    alias = alias or settings.serving_alias
    client = configure_mlflow(settings)
    client.get_model_version(name, version)  # a clear MLflow error if it does not exist
    # Only a missing alias is "no previous version": a registry error must not skip the gate.
    previous = alias_version(client, name, alias)
    metric = rule.metric
    scores: dict[str, float] = {}
    rows = 0
    gated = alias == settings.serving_alias
    if previous is not None and previous != version:
        try:
            scores, rows = evaluate(name, [version, previous], settings)
        except NoSharedEvaluationSet:
            if gated and not force:
                raise
    promotion = Promotion(
        name=name,
        alias=alias,
        version=version,
        previous=previous,
        metric=metric,
        candidate_score=scores.get(version),
        previous_score=scores.get(previous) if previous else None,
        forced=force,
        evaluation_rows=rows,
    )
    worse = (
        promotion.candidate_score is not None
        and promotion.previous_score is not None
        and not rule.better(promotion.candidate_score, promotion.previous_score)
    )
    if gated and worse and not force:
        side = "below" if rule.higher_is_better else "above"
        raise PromotionRefused(
            f"{name} version {version} scores {promotion.candidate_score:.4f} {metric}, {side} "
            f"@{alias} (version {previous}) at {promotion.previous_score:.4f} on the {rows} "
            "hold-out rows neither trained on: not promoted "
            "(--force overrides, and is recorded)"
        )
    cleared = gated and alias_version(client, name, settings.challenger_alias) == version
    if cleared:
        # The challenger won: stop shadowing it first, so that no serving worker ever sees
        # it as champion and challenger at once.
        client.delete_registered_model_alias(name, settings.challenger_alias)
    client.set_registered_model_alias(name, alias, version)
    tags = {
        f"{alias}.promoted_by": getpass.getuser(),
        f"{alias}.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        f"{alias}.previous_version": previous or "",
        f"{alias}.forced": str(force and worse).lower(),
    }
    if promotion.delta is not None:
        tags[f"{alias}.gate"] = (
            f"{metric} {promotion.candidate_score:.4f} vs {promotion.previous_score:.4f} "
            f"(delta {promotion.delta:+.4f}) on {rows} shared hold-out rows"
        )
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return dataclasses.replace(promotion, cleared_challenger=cleared, worse=worse)


def drop_alias(name: str, alias: str, settings: ModelSettings | None = None) -> str | None:
    """Remove `alias` (e.g. stop shadowing a challenger); the version it pointed to, if any.
    The serving alias cannot be dropped: serving would have nothing to load."""
    settings = settings or get_settings()
    if alias == settings.serving_alias:
        raise ValueError(f"@{alias} serves traffic: promote another version instead")
    client = configure_mlflow(settings)
    version = alias_version(client, name, alias)
    if version is not None:
        client.delete_registered_model_alias(name, alias)
    return version


def versions_table(settings: ModelSettings | None = None) -> list[dict[str, Any]]:
    """Every version of every served model: aliases, creation time and key metrics."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    client = configure_mlflow(settings)
    rows = []
    for name in served_models():
        # search_model_versions leaves `aliases` empty; the registered model has them all.
        try:
            registered = client.get_registered_model(name)
        except MlflowException:
            continue  # not trained yet
        aliases: dict[str, list[str]] = {}
        for alias, version in registered.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for found in client.search_model_versions(f"name = '{name}'"):
            run = client.get_run(str(found.run_id))
            metrics = key_metrics(run)
            rows.append(
                {
                    "name": name,
                    "version": str(found.version),
                    "aliases": sorted(aliases.get(str(found.version), [])),
                    "created": datetime.fromtimestamp(found.creation_timestamp / 1000, UTC),
                    "metrics": metrics,
                }
            )
    return sorted(rows, key=lambda r: (r["name"], -int(r["version"])))
