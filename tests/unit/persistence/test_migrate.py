"""Migrations run by several processes at once, as a server's API workers start them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from persistence.db import make_engine
from tests.support.predictions import migrated_at_once


def test_migrators_starting_together_on_a_fresh_sqlite_file_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    assert migrated_at_once(url) == []
    engine = make_engine(url)
    assert "predictions" in inspect(engine).get_table_names()
    engine.dispose()
