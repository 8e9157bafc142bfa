"""`python -m serving.rollups` on SQLite: nothing to roll up, said in one line (the
PostgreSQL side is in tests/integration/test_graphql.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from persistence.settings import get_settings
from serving.rollups import main
from tests.support.predictions import sqlite_database


def test_on_sqlite_there_is_nothing_to_roll_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_database(tmp_path))
    get_settings.cache_clear()
    try:
        assert main([]) == 0
    finally:
        get_settings.cache_clear()
    assert "nothing to roll up" in capsys.readouterr().out
