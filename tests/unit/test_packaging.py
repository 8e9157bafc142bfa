"""Build configuration stays in step with the package metadata."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_bentofile_pins_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bento["python"]["packages"] == project["dependencies"]
    assert bento["service"] == "service:ClientInsight"


def test_no_bento_build_config_in_pyproject() -> None:
    assert "bentoml" not in tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {})


def test_urls_are_redacted_before_they_are_shown() -> None:
    from common.urls import psycopg_url, redacted

    assert redacted("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redacted("https://u:pw@mlflow.example") == "https://u:***@mlflow.example"
    assert redacted("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert psycopg_url("postgres://u:pw@h/d") == "postgresql+psycopg://u:pw@h/d"
    assert psycopg_url("file:///tmp/mlruns") == "file:///tmp/mlruns"
