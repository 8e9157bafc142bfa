"""Train, evaluate, log and register the churn model."""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from models import churn
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

#: Types skops must trust to load this pipeline: the log1p transform and the encoder dtype.
SKOPS_TRUSTED_TYPES = ["numpy.log1p", "numpy.dtype"]


@dataclass(frozen=True)
class TrainingConfig:
    """What a run varies; logged as MLflow params."""

    seed: int = 42
    test_size: float = 0.2
    cv_folds: int = 5
    C: float = 0.3
    register: bool = True


def build_pipeline(C: float, seed: int) -> Pipeline:
    """Impute, log-scale and standardise numbers; one-hot the categories; logistic regression.

    log1p on tenure and charges lifts 5-fold ROC-AUC from 0.845 to 0.850 on the Telco data.
    """
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
            ("scale", StandardScaler()),
        ]
    )
    categorical = OneHotEncoder(
        categories=[list(v) for v in churn.CATEGORICAL_FEATURES.values()],
        handle_unknown="ignore",
    )
    preprocess = ColumnTransformer(
        [
            ("numeric", numeric, list(churn.NUMERIC_FEATURES)),
            ("binary", "passthrough", list(churn.BINARY_FEATURES)),
            ("categorical", categorical, list(churn.CATEGORICAL_FEATURES)),
        ]
    )
    return Pipeline(
        [
            ("preprocess", preprocess),
            ("classifier", LogisticRegression(C=C, max_iter=2000, random_state=seed)),
        ]
    )


def train(
    data: Dataset,
    config: TrainingConfig | None = None,
    settings: ModelSettings | None = None,
    steps: Steps | None = None,
) -> TrainingResult:
    """Run the whole training workflow as one MLflow run; register and maybe promote."""
    import mlflow
    import mlflow.sklearn
    from mlflow.data.pandas_dataset import from_pandas

    config = config or TrainingConfig()
    settings = settings or get_settings()
    steps = steps or Steps.quiet()
    ensure_experiment(settings)

    x_train, x_test, y_train, y_test = train_test_split(
        data.features,
        data.target,
        test_size=config.test_size,
        stratify=data.target,
        random_state=config.seed,
    )
    with mlflow.start_run(run_name="churn") as run, warnings.catch_warnings():
        # The signature is explicit (from the contract); MLflow's hint about inferring integer
        # columns from examples (dataset and input example) does not apply to it.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        mlflow.set_tags({"model": churn.MODEL_NAME, "dataset.source": data.source})
        mlflow.log_params(
            {
                "seed": config.seed,
                "test_size": config.test_size,
                "cv_folds": config.cv_folds,
                "C": config.C,
                "estimator": "LogisticRegression",
                "features": ",".join(churn.FEATURES),
                "dataset_source": data.source,
                "dataset_rows": data.rows,
                "dataset_sha256": data.sha256,
                "train_rows": len(x_train),
                "holdout_rows": len(x_test),
            }
        )
        frame = data.features.assign(**{churn.TARGET: data.target})
        # MLflow resolves file paths as sources; packaged data is recorded by the params above.
        source: dict[str, str] = {"source": data.source} if Path(data.source).is_file() else {}
        mlflow.log_input(
            from_pandas(frame, name="churn", targets=churn.TARGET, **source),
            context="training",
        )

        with steps.step(f"{config.cv_folds}-fold cross-validation"):
            pipeline = build_pipeline(config.C, config.seed)
            oof, metrics = evaluate.cross_validate(
                pipeline, x_train, y_train, config.cv_folds, config.seed
            )
            threshold = evaluate.choose_threshold(y_train, oof)
            metrics["decision_threshold"] = threshold

        with steps.step("fit and hold-out evaluation"):
            pipeline.fit(x_train, y_train)
            holdout = pipeline.predict_proba(x_test)[:, 1]
            metrics.update(evaluate.binary_metrics(y_test, holdout, threshold, "holdout"))
            mlflow.log_metrics(metrics)

        with steps.step("plots, data profile and evaluation set"):
            importance = permutation_importance(
                pipeline,
                x_test,
                y_test,
                scoring="roc_auc",
                n_repeats=5,
                random_state=config.seed,
            )
            importance_series = pd.Series(importance.importances_mean, index=x_test.columns)
            evaluate.log_figure(evaluate.plot_roc(y_test, holdout), "plots/roc.png")
            evaluate.log_figure(evaluate.plot_calibration(y_test, holdout), "plots/calibration.png")
            evaluate.log_figure(
                evaluate.plot_importance(importance_series, "Permutation importance (ROC-AUC)"),
                "plots/feature_importance.png",
            )
            mlflow.log_dict(evaluate.data_profile(data.features, data.target), "data_profile.json")
            mlflow.log_dict(
                {str(k): float(v) for k, v in importance_series.items()}, "feature_importance.json"
            )
            log_evaluation_set(x_test.assign(**{churn.TARGET: y_test}))

        with steps.step("log and register the model"):
            version, promoted = log_and_register(
                pipeline,
                name=churn.MODEL_NAME,
                signature=churn.mlflow_signature(),
                input_example=x_train.head(5),
                settings=settings,
                register=config.register,
                trusted_types=SKOPS_TRUSTED_TYPES,
                pyfunc_predict_fn="predict_proba",
                version_tags=threshold_tags(
                    threshold, "holdout_roc_auc", metrics["holdout_roc_auc"]
                ),
            )
        return TrainingResult(run.info.run_id, version, promoted, metrics, threshold)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m training churn`'s options (the catalog's training entry)."""
    parser.add_argument("--data", type=Path, help="IBM Telco CSV in its original schema")
    parser.add_argument("--sample", type=int, help="train on a stratified sample of N rows")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--C",
        type=float,
        default=0.3,
        help="inverse regularisation strength of the logistic regression (default 0.3)",
    )


def run(args: argparse.Namespace) -> int:
    """Load, train, log and register; print the run's metrics."""
    from rich.console import Console

    from training.data import load_churn
    from training.registration import print_summary

    steps = Steps.to_terminal()
    with steps.step("load and validate churn data"):
        dataset = load_churn(args.data, sample=args.sample, seed=args.seed)
    Console(stderr=True).print(
        f"data: {dataset.source} ({dataset.rows} rows, sha256 {dataset.sha256[:12]})"
    )
    result = train(dataset, TrainingConfig(seed=args.seed, C=args.C), steps=steps)
    print_summary(f"churn run {result.run_id}", result)
    return 0
