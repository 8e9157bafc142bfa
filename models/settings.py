"""Settings shared by training and serving: where MLflow lives, which alias serves, how to batch.

Read from environment variables only (no `.env` file is read here: the Makefile exports it), and
only when `get_settings()` is first called, never at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The checkout (or the Bento's src directory): default local stores live beside the code.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ModelSettings(BaseSettings):
    """MLflow location and serving knobs, standard names where they exist."""

    model_config = SettingsConfigDict(extra="ignore")

    mlflow_tracking_uri: str = Field(
        default_factory=lambda: f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}",
        validation_alias="MLFLOW_TRACKING_URI",
    )
    #: Set explicitly: MLflow's default (`./mlruns` relative to the cwd) breaks serving from
    #: another directory.
    mlflow_artifact_root: Path = Field(
        default_factory=lambda: PROJECT_ROOT / ".mlflow" / "artifacts",
        validation_alias="CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT",
    )
    experiment_name: str = Field(
        default="clientinsight", validation_alias="CLIENTINSIGHT_EXPERIMENT"
    )
    serving_alias: str = Field(default="champion", validation_alias="CLIENTINSIGHT_ALIAS")
    #: The alias whose version is scored in the shadow of the served one (if it exists).
    challenger_alias: str = Field(
        default="challenger", validation_alias="CLIENTINSIGHT_CHALLENGER_ALIAS"
    )
    #: Churn `top_factors` and credit reasons from each prediction's feature contributions.
    explanations: bool = Field(default=True, validation_alias="CLIENTINSIGHT_EXPLANATIONS")
    #: Seconds between two looks at the registry's aliases in each model worker; 0: no reload.
    reload_interval_s: float = Field(
        default=10.0, ge=0, validation_alias="CLIENTINSIGHT_RELOAD_INTERVAL_S"
    )
    #: Share of API requests also scored by the challenger, off the request path.
    shadow_sample: float = Field(
        default=0.1, ge=0, le=1, validation_alias="CLIENTINSIGHT_SHADOW_SAMPLE"
    )
    #: Records waiting for shadow scoring per API worker; above it, samples are skipped.
    shadow_max_pending: int = Field(
        default=5000, ge=1, validation_alias="CLIENTINSIGHT_SHADOW_MAX_PENDING"
    )

    # Adaptive batching of /churn/predict and /credit/evaluate (serving/batching.py): records
    # per model-service call, and calls in flight per API worker. No timer: a batch leaves as
    # soon as a call slot is free, so one client never waits and batches grow with load.
    churn_max_batch_size: int = Field(
        default=64, ge=1, le=4096, validation_alias="CLIENTINSIGHT_CHURN_MAX_BATCH_SIZE"
    )
    churn_workers: int = Field(default=1, ge=1, validation_alias="CLIENTINSIGHT_CHURN_WORKERS")
    credit_max_batch_size: int = Field(
        default=64, ge=1, le=4096, validation_alias="CLIENTINSIGHT_CREDIT_MAX_BATCH_SIZE"
    )
    model_calls_in_flight: int = Field(
        default=2, ge=1, le=64, validation_alias="CLIENTINSIGHT_MODEL_CALLS_IN_FLIGHT"
    )
    credit_workers: int = Field(default=1, ge=1, validation_alias="CLIENTINSIGHT_CREDIT_WORKERS")
    api_workers: int = Field(default=1, ge=1, validation_alias="CLIENTINSIGHT_API_WORKERS")
    #: OpenTelemetry spans per request. Off by default: with no exporter configured they cost
    #: about a tenth of a worker's CPU for nothing (bench/README.md).
    tracing: bool = Field(default=False, validation_alias="CLIENTINSIGHT_TRACING")
    #: One access-log line per public request (the model services never log the internal hop).
    access_log: bool = Field(default=True, validation_alias="CLIENTINSIGHT_ACCESS_LOG")
    #: Seconds a model-service call may take before the entry API gives up with a 503.
    model_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="CLIENTINSIGHT_MODEL_TIMEOUT_S"
    )
    #: Rows per model-service call when scoring an uploaded file.
    file_chunk_rows: int = Field(
        default=2000, ge=1, validation_alias="CLIENTINSIGHT_FILE_CHUNK_ROWS"
    )
    max_rows_per_request: int = Field(
        default=1000, ge=1, validation_alias="CLIENTINSIGHT_MAX_ROWS_PER_REQUEST"
    )
    max_rows_per_file: int = Field(
        default=1_000_000, ge=1, validation_alias="CLIENTINSIGHT_MAX_ROWS_PER_FILE"
    )

    @field_validator("mlflow_artifact_root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> ModelSettings:
    """The process-wide settings, read once from the environment."""
    return ModelSettings()
