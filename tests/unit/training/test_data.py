"""Data contract: the packaged default data and the original IBM CSV are the same customers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models import churn
from training.data import CHURN_DEFAULT_SOURCE, DataError, load_churn


def test_default_data_is_the_telco_sample() -> None:
    data = load_churn()
    assert data.source == CHURN_DEFAULT_SOURCE
    assert data.rows == 7043
    assert tuple(data.features.columns) == churn.FEATURES
    assert int(data.target.sum()) == 1869  # the Telco sample's churners
    assert int(data.features["total_charges"].isna().sum()) == 11


def test_ibm_csv_as_is_gives_the_same_features(telco_csv: Path) -> None:
    packaged = load_churn()
    original = load_churn(telco_csv)
    assert original.rows == 7043
    pd.testing.assert_frame_equal(packaged.features, original.features)
    assert (packaged.target == original.target).all()
    assert original.source == str(telco_csv.resolve())


def test_sample_is_stratified_and_reproducible() -> None:
    first = load_churn(sample=1000, seed=3)
    second = load_churn(sample=1000, seed=3)
    assert first.rows == pytest.approx(1000, abs=2)
    pd.testing.assert_frame_equal(first.features, second.features)
    assert abs(first.target.mean() - 1869 / 7043) < 0.01


def test_bad_csv_names_row_and_field(tmp_path: Path, telco_csv: Path) -> None:
    frame = pd.read_csv(telco_csv, dtype=str, keep_default_na=False).head(5)
    frame.loc[3, "Contract"] = "Forever"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 4: Contract: Input should be"):
        load_churn(path)


def test_csv_without_target_is_refused(tmp_path: Path, telco_csv: Path) -> None:
    path = tmp_path / "no_target.csv"
    pd.read_csv(telco_csv, dtype=str).drop(columns=["Churn"]).head(5).to_csv(path, index=False)
    with pytest.raises(DataError, match="target"):
        load_churn(path)
