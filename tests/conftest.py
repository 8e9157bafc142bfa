"""Shared fixtures: reference data, a tiny MLflow store, real servers and a real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.settings import ModelSettings
from tests.support import models as support_models
from tests.support.parts import missing
from tests.support.postgres import Cluster, find_bindir, throwaway_cluster

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    """The original IBM Telco CSV (reference data beside the checkout, never copied in)."""
    path = SHARED_DATA / "Telco-Customer-Churn.csv"
    if not path.is_file():
        missing("shared_data", f"{path} is missing (CI clones with ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> ModelSettings:
    """A temporary MLflow store holding every family's tiny models at version 1, @champion."""
    settings = support_models.mlflow_settings(tmp_path_factory.mktemp("mlflow"))
    result = support_models.train_tiny_churn(settings)
    assert result.version == "1" and result.promoted
    credit_result = support_models.train_tiny_credit(settings)
    assert credit_result.segment.promoted and credit_result.approval.promoted
    assert support_models.train_tiny_balance(settings).promoted
    return settings


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the whole session."""
    if find_bindir() is None:
        missing("postgres", "no PostgreSQL server binaries (initdb) found")
    try:
        with throwaway_cluster() as cluster:
            yield cluster
    except Exception as exc:  # a cluster that cannot start is a missing part, loudly
        if isinstance(exc, pytest.skip.Exception | pytest.fail.Exception):
            raise
        missing("postgres", f"could not start a throwaway cluster: {exc}")


@pytest.fixture
def postgres_url(postgres: Cluster) -> str:
    """A fresh, empty database on the throwaway cluster."""
    return postgres.create_database()
