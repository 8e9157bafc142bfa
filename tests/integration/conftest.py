"""Servers for the integration tests: a real `bentoml serve` on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from models.settings import ModelSettings
from tests.support.models import mlflow_env
from tests.support.server import Server, serve


@pytest.fixture(scope="module")
def sqlite_server(
    mlflow_store: ModelSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve-sqlite")
    env = {**mlflow_env(mlflow_store), "DATABASE_URL": f"sqlite:///{root / 'predictions.db'}"}
    with serve(env, Path(root) / "server.log") as server:
        yield server
