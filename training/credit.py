"""Train, evaluate, log and register the two credit models: segmentation and approval."""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, roc_curve, silhouette_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from models import credit
from models.registry import ensure_experiment
from models.settings import ModelSettings, get_settings
from training import evaluate
from training.data import Dataset
from training.progress import Steps
from training.registration import (
    TrainingResult,
    log_and_register,
    log_evaluation_set,
    threshold_tags,
)

#: Types skops must trust to load these pipelines: the log1p transform and the encoder dtype.
SKOPS_TRUSTED_TYPES = ["numpy.log1p", "numpy.dtype"]


class MonotonicityError(RuntimeError):
    """The fitted approval model moves the wrong way on a constrained feature."""


@dataclass(frozen=True)
class CreditConfig:
    """What a credit training run varies; logged as MLflow params."""

    seed: int = 42
    test_size: float = 0.2
    cv_folds: int = 5
    C: float = 1.0
    k_values: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    bootstraps: int = 10
    #: A k is only eligible when resampled clusterings agree this much (mean adjusted Rand).
    min_stability: float = 0.75
    register: bool = True


@dataclass(frozen=True)
class CreditResult:
    segment: TrainingResult
    approval: TrainingResult
    k_selection: list[dict[str, float]] = field(default_factory=list)


def build_preprocess() -> ColumnTransformer:
    """log1p then standardise the skewed counts and income; standardise the rest."""
    logged = Pipeline(
        [
            ("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
            ("scale", StandardScaler()),
        ]
    )
    plain = [f for f in credit.FEATURES if f not in credit.LOG_FEATURES]
    return ColumnTransformer(
        [("log", logged, list(credit.LOG_FEATURES)), ("plain", StandardScaler(), plain)]
    )


def build_segment_pipeline(k: int, seed: int) -> Pipeline:
    return Pipeline(
        [("preprocess", build_preprocess()), ("kmeans", KMeans(k, n_init=10, random_state=seed))]
    )


def build_approval_pipeline(C: float, seed: int) -> Pipeline:
    """Logistic regression on log-scaled features: monotone in every input by construction,
    in the direction of its coefficient (log1p and scaling are increasing maps)."""
    return Pipeline(
        [
            ("preprocess", build_preprocess()),
            ("classifier", LogisticRegression(C=C, max_iter=2000, random_state=seed)),
        ]
    )


def select_k(features: pd.DataFrame, config: CreditConfig) -> tuple[int, list[dict[str, float]]]:
    """Pick the number of segments: best silhouette among the stable choices.

    Stability is the mean adjusted Rand index between the full-data clustering and clusterings
    fitted on bootstrap resamples (all labelling the full data).
    """
    rng = np.random.default_rng(config.seed)
    scaled = build_preprocess().fit_transform(features)
    table: list[dict[str, float]] = []
    for k in config.k_values:
        full = KMeans(k, n_init=10, random_state=config.seed).fit(scaled)
        agreements = []
        for b in range(config.bootstraps):
            idx = rng.choice(len(scaled), len(scaled), replace=True)
            resampled = KMeans(k, n_init=10, random_state=config.seed + b + 1).fit(scaled[idx])
            agreements.append(adjusted_rand_score(full.labels_, resampled.predict(scaled)))
        table.append(
            {
                "k": float(k),
                "silhouette": float(silhouette_score(scaled, full.labels_)),
                "stability": float(np.mean(agreements)),
                "smallest_segment": float(np.bincount(full.labels_).min()),
            }
        )
    stable = [row for row in table if row["stability"] >= config.min_stability] or table
    best = max(stable, key=lambda row: row["silhouette"])
    return int(best["k"]), table


def profile_segments(
    pipeline: Pipeline, features: pd.DataFrame, target: np.ndarray
) -> credit.Segmentation:
    """Centre (original units), size, approval rate and a human name for every segment."""
    labels = pipeline.predict(features)
    overall_mean = features.mean()
    overall_std = features.std(ddof=0).replace(0, 1)
    centroids = features.groupby(labels).mean()
    z_scores = (centroids - overall_mean) / overall_std
    names = credit.name_segments(z_scores)
    profiles = {}
    for segment in sorted(set(int(s) for s in labels)):
        members = labels == segment
        profiles[segment] = credit.SegmentProfile(
            segment=segment,
            name=names[segment],
            size=int(members.sum()),
            approval_rate=float(target[members].mean()),
            centroid={
                str(k): round(float(v), 4) for k, v in centroids.loc[segment].to_dict().items()
            },
            median_income=float(features.loc[members, "income"].median()),
        )
    return credit.Segmentation(profiles, float(target.mean()))


def youden_threshold(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The cut-off maximising TPR - FPR: balances wrongful approvals and wrongful refusals."""
    fpr, tpr, thresholds = roc_curve(y_true, probabilities)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def check_monotonic(pipeline: Pipeline) -> dict[str, float]:
    """Refuse a model whose coefficient on a constrained feature has the wrong sign."""
    names = pipeline.named_steps["preprocess"].get_feature_names_out()
    coefficients = dict(
        zip((n.split("__", 1)[1] for n in names), pipeline[-1].coef_[0], strict=True)
    )
    for feature, direction in credit.MONOTONIC.items():
        if coefficients[feature] * direction < 0:
            raise MonotonicityError(
                f"approval model coefficient on {feature!r} is {coefficients[feature]:.3f}: "
                f"more {feature} would {'raise' if direction < 0 else 'lower'} approval"
            )
    return {k: float(v) for k, v in coefficients.items()}


def _plot_k_selection(table: list[dict[str, float]], chosen: int) -> Any:
    import matplotlib.pyplot as plt

    ks = [row["k"] for row in table]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [row["silhouette"] for row in table], marker="o", label="silhouette")
    ax.plot(ks, [row["stability"] for row in table], marker="s", label="stability (mean ARI)")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen k={chosen}")
    ax.set(xlabel="segments (k)", title="Choosing the number of segments")
    ax.legend()
    fig.tight_layout()
    return fig


def _plot_profiles(segmentation: credit.Segmentation, features: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    frame = pd.DataFrame({p.name: p.centroid for p in segmentation.profiles.values()}).T[
        list(credit.FEATURES)
    ]
    z = (frame - features.mean()) / features.std(ddof=0).replace(0, 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.6 * len(frame)))
    image = ax.imshow(z.to_numpy(), cmap="coolwarm", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(z.columns)), z.columns, rotation=30, ha="right")
    labels = [
        f"{p.name} (n={p.size}, {p.approval_rate:.0%} approved)"
        for p in segmentation.profiles.values()
    ]
    ax.set_yticks(range(len(labels)), labels)
    fig.colorbar(image, ax=ax, label="centre vs everyone (z-score)")
    ax.set_title("Segment profiles")
    fig.tight_layout()
    return fig


def train(
    data: Dataset,
    config: CreditConfig | None = None,
    settings: ModelSettings | None = None,
    steps: Steps | None = None,
) -> CreditResult:
    """Both credit models, each its own MLflow run under one parent run."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    config = config or CreditConfig()
    settings = settings or get_settings()
    steps = steps or Steps.quiet()
    ensure_experiment(settings)
    leaked = set(credit.LEAKAGE_COLUMNS) & set(data.features.columns)
    if leaked:
        raise ValueError(f"post-issuance columns {sorted(leaked)} must never be features")

    x_train, x_test, y_train, y_test = train_test_split(
        data.features,
        data.target,
        test_size=config.test_size,
        stratify=data.target,
        random_state=config.seed,
    )
    common = {
        "seed": config.seed,
        "dataset_source": data.source,
        "dataset_rows": data.rows,
        "dataset_sha256": data.sha256,
        "rows_rejected": len(data.rejected),
        "features": ",".join(credit.FEATURES),
    }
    with mlflow.start_run(run_name="credit"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.log_params(common)
        if data.rejected:
            mlflow.log_text("\n".join(data.rejected), "rejected_rows.txt")
        frame = data.features.assign(**{credit.TARGET: data.target})
        mlflow.log_input(from_pandas(frame, name="credit", targets=credit.TARGET), "training")

        with mlflow.start_run(run_name=credit.SEGMENT_MODEL, nested=True) as segment_run:
            mlflow.set_tags({"model": credit.SEGMENT_MODEL, "dataset.source": data.source})
            mlflow.log_params(
                {
                    **common,
                    "k_values": str(config.k_values),
                    "bootstraps": config.bootstraps,
                    "min_stability": config.min_stability,
                }
            )
            with steps.step("choose the number of segments (silhouette, stability)"):
                k, table = select_k(data.features, config)
            with steps.step(f"fit {k} segments and profile them"):
                segment_pipeline = build_segment_pipeline(k, config.seed).fit(data.features)
                segmentation = profile_segments(segment_pipeline, data.features, data.target)
                chosen = next(row for row in table if int(row["k"]) == k)
                segment_metrics = {
                    "n_segments": float(k),
                    "silhouette": chosen["silhouette"],
                    "stability_ari": chosen["stability"],
                }
                for row in table:
                    segment_metrics[f"silhouette_k{int(row['k'])}"] = row["silhouette"]
                    segment_metrics[f"stability_ari_k{int(row['k'])}"] = row["stability"]
                mlflow.log_metrics(segment_metrics)
                mlflow.log_dict({"chosen_k": k, "candidates": table}, "k_selection.json")
                mlflow.log_dict(segmentation.to_dict(), "segments.json")
                evaluate.log_figure(_plot_k_selection(table, k), "plots/k_selection.png")
                evaluate.log_figure(
                    _plot_profiles(segmentation, data.features), "plots/segment_profiles.png"
                )
                log_evaluation_set(x_test.assign(**{credit.TARGET: y_test}))
            with steps.step("log and register credit-segment"):
                segment_version, segment_promoted = log_and_register(
                    segment_pipeline,
                    name=credit.SEGMENT_MODEL,
                    signature=credit.mlflow_signature("segment"),
                    input_example=x_train.head(5),
                    settings=settings,
                    register=config.register,
                    trusted_types=SKOPS_TRUSTED_TYPES,
                    version_tags={"n_segments": str(k)},
                )
            segment_result = TrainingResult(
                segment_run.info.run_id, segment_version, segment_promoted, segment_metrics, None
            )

        with mlflow.start_run(run_name=credit.APPROVAL_MODEL, nested=True) as approval_run:
            mlflow.set_tags({"model": credit.APPROVAL_MODEL, "dataset.source": data.source})
            mlflow.log_params(
                {
                    **common,
                    "C": config.C,
                    "cv_folds": config.cv_folds,
                    "estimator": "LogisticRegression",
                    "train_rows": len(x_train),
                    "holdout_rows": len(x_test),
                }
            )
            with steps.step(f"{config.cv_folds}-fold cross-validation of credit-approval"):
                pipeline = build_approval_pipeline(config.C, config.seed)
                oof, approval_metrics = evaluate.cross_validate(
                    pipeline, x_train, y_train, config.cv_folds, config.seed
                )
                threshold = youden_threshold(y_train, oof)
                approval_metrics["decision_threshold"] = threshold
            with steps.step("fit, check monotonicity, hold-out evaluation"):
                pipeline.fit(x_train, y_train)
                coefficients = check_monotonic(pipeline)
                holdout = pipeline.predict_proba(x_test)[:, 1]
                approval_metrics.update(
                    evaluate.binary_metrics(y_test, holdout, threshold, "holdout")
                )
                mlflow.log_metrics(approval_metrics)
                mlflow.log_dict(coefficients, "coefficients.json")
                evaluate.log_figure(evaluate.plot_roc(y_test, holdout), "plots/roc.png")
                evaluate.log_figure(
                    evaluate.plot_calibration(y_test, holdout), "plots/calibration.png"
                )
                evaluate.log_figure(
                    evaluate.plot_importance(
                        pd.Series(coefficients).abs(), "|coefficient| (standardised features)"
                    ),
                    "plots/feature_importance.png",
                )
                mlflow.log_dict(
                    evaluate.data_profile(data.features, data.target), "data_profile.json"
                )
                log_evaluation_set(x_test.assign(**{credit.TARGET: y_test}))
            with steps.step("log and register credit-approval"):
                approval_version, approval_promoted = log_and_register(
                    pipeline,
                    name=credit.APPROVAL_MODEL,
                    signature=credit.mlflow_signature("approval"),
                    input_example=x_train.head(5),
                    settings=settings,
                    register=config.register,
                    trusted_types=SKOPS_TRUSTED_TYPES,
                    pyfunc_predict_fn="predict_proba",
                    version_tags=threshold_tags(
                        threshold, "holdout_roc_auc", approval_metrics["holdout_roc_auc"]
                    ),
                )
            approval_result = TrainingResult(
                approval_run.info.run_id,
                approval_version,
                approval_promoted,
                approval_metrics,
                threshold,
            )
    return CreditResult(segment_result, approval_result, table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m training credit`'s options (the catalog's training entry)."""
    parser.add_argument("--data", type=Path, help="AER CreditCard CSV in its original schema")
    parser.add_argument("--seed", type=int, default=42)


def run(args: argparse.Namespace) -> int:
    """Load, choose k, train both models, log and register; print the evidence and metrics."""
    from rich.console import Console
    from rich.table import Table

    from training.data import load_credit, print_source
    from training.registration import print_summary

    steps = Steps.to_terminal()
    with steps.step("load and validate credit data"):
        dataset = load_credit(args.data)
    print_source(dataset)
    result = train(dataset, CreditConfig(seed=args.seed), steps=steps)
    k_table = Table(title="number of segments: evidence")
    for column in ("k", "silhouette", "stability (ARI)", "smallest segment"):
        k_table.add_column(column, justify="right")
    for row in result.k_selection:
        k_table.add_row(
            f"{row['k']:.0f}",
            f"{row['silhouette']:.3f}",
            f"{row['stability']:.3f}",
            f"{row['smallest_segment']:.0f}",
        )
    Console().print(k_table)
    for name, part in (
        (credit.SEGMENT_MODEL, result.segment),
        (credit.APPROVAL_MODEL, result.approval),
    ):
        print_summary(f"{name} run {part.run_id}", part, skip=("silhouette_k", "stability_ari_k"))
    return 0
