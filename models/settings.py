"""Settings shared by training and serving: where MLflow lives, which aliases serve, whether
loaded versions explain their predictions. The server's own knobs are in `serving/settings.py`.

Read from environment variables only (no `.env` file is read here: the Makefile exports it), and
only when `get_settings()` is first called, never at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.paths import PROJECT_ROOT


class ModelSettings(BaseSettings):
    """Where the registry is and which aliases mean what; standard names where they exist."""

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
    #: Per-prediction factors (churn `top_factors`, credit reasons, ...) from each loaded
    #: version's explainer.
    explanations: bool = Field(default=True, validation_alias="CLIENTINSIGHT_EXPLANATIONS")
    #: Which families this deployment serves and trains: `module:attribute` of a tuple of
    #: `Family` declarations (a team's own package, or a test's), `models/catalog.py`'s own
    #: by default.
    catalog: str = Field(
        default="models.catalog:FAMILIES", validation_alias="CLIENTINSIGHT_CATALOG"
    )

    @field_validator("mlflow_artifact_root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> ModelSettings:
    """The process-wide settings, read once from the environment."""
    return ModelSettings()
