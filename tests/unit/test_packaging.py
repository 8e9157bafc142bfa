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
