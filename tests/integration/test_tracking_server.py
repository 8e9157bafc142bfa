"""MLflow on PostgreSQL (tracking-server mode): training, promotion and loading for serving work
as they do on the local SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import registry
from models.settings import ModelSettings
from tests.support.models import train_tiny_churn
from training import promotion

pytestmark = [pytest.mark.postgres, pytest.mark.integration, pytest.mark.slow]


def test_train_promote_and_load_against_a_postgresql_backed_mlflow(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = ModelSettings.model_validate(
        {
            # A plain postgresql:// URL, as operators write it (served through psycopg 3).
            "MLFLOW_TRACKING_URI": postgres_url,
            "CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        }
    )
    first = train_tiny_churn(settings)
    assert first.version == "1" and first.promoted
    second = train_tiny_churn(settings)
    assert second.version == "2" and not second.promoted
    done = promotion.promote("churn", "2", settings=settings)
    assert done.previous == "1" and done.delta == 0
    served = registry.load("churn", settings=settings)
    assert served.version == "2" and served.inference_path == "fast"
    assert served.metrics["holdout_roc_auc"] > 0.7
