"""Gated promotion on a real (temporary) MLflow store: equal or better moves @champion, worse
is refused with both figures, --force moves it and says so in the tags, challengers need no
gate, rollback is a promotion of the previous version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from models import churn
from models.registry import configure_mlflow, ensure_experiment
from models.settings import ModelSettings
from tests.support.models import mlflow_settings, train_tiny_churn, train_tiny_credit
from training import promotion
from training.__main__ import main
from training.churn import SKOPS_TRUSTED_TYPES
from training.registration import log_and_register, log_evaluation_set

pytestmark = [pytest.mark.slow]


def _register_worse(settings: ModelSettings, holdout: pd.DataFrame) -> str:
    """A version that predicts the base rate for everyone: ROC AUC 0.5 on any data."""
    best = mlflow.sklearn.load_model("models:/churn/1")
    features = holdout[list(best.feature_names_in_)]
    worse = best.set_params(classifier=DummyClassifier(strategy="prior"))
    worse.fit(features, holdout[churn.TARGET].astype(int))
    ensure_experiment(settings)
    with mlflow.start_run():
        log_evaluation_set(holdout)
        version, _ = log_and_register(
            worse,
            name=churn.MODEL_NAME,
            signature=churn.mlflow_signature(),
            input_example=features.head(5),
            settings=settings,
            register=True,
            trusted_types=SKOPS_TRUSTED_TYPES,
        )
    assert version is not None
    return version


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelSettings]:
    settings = mlflow_settings(Path(tmp_path_factory.mktemp("promotion")))
    assert train_tiny_churn(settings).version == "1"  # @champion
    assert train_tiny_churn(settings).version == "2"  # the same data and seed: as good
    client = configure_mlflow(settings)
    run_id = client.get_model_version("churn", "1").run_id
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="evaluation/holdout.parquet"
    )
    assert _register_worse(settings, pd.read_parquet(local)) == "3"
    yield settings


def _champion(settings: ModelSettings) -> str:
    return str(configure_mlflow(settings).get_model_version_by_alias("churn", "champion").version)


def test_gate_refuses_worse_promotes_equal_and_force_is_recorded(store: ModelSettings) -> None:
    with pytest.raises(promotion.PromotionRefused, match=r"version 3 scores 0\.5000") as refused:
        promotion.promote("churn", "3", settings=store)
    assert "(version 1) at 0.8" in str(refused.value) or "(version 1) at 0.7" in str(refused.value)
    assert _champion(store) == "1"

    equal = promotion.promote("churn", "2", settings=store)
    assert equal.delta == 0 and not equal.forced and _champion(store) == "2"

    forced = promotion.promote("churn", "3", force=True, settings=store)
    assert forced.delta is not None and forced.delta < 0 and _champion(store) == "3"
    tags = configure_mlflow(store).get_model_version("churn", "3").tags
    assert tags["champion.forced"] == "true" and tags["champion.previous_version"] == "2"
    assert tags["champion.promoted_by"] and "delta -0." in tags["champion.gate"]

    # Rollback: promote the previous version again (better, so no force needed).
    back = promotion.promote("churn", "2", settings=store)
    assert back.delta is not None and back.delta > 0 and _champion(store) == "2"


def test_a_challenger_needs_no_gate(store: ModelSettings) -> None:
    done = promotion.promote("churn", "3", alias="challenger", settings=store)
    assert done.alias == "challenger" and not done.forced
    challenger = configure_mlflow(store).get_model_version_by_alias("churn", "challenger")
    assert str(challenger.version) == "3"


def test_promoting_the_challenger_removes_that_alias_and_drop_alias_stops_shadowing(
    store: ModelSettings,
) -> None:
    client = configure_mlflow(store)
    before = _champion(store)
    promotion.promote("churn", "1", alias="challenger", settings=store)
    done = promotion.promote("churn", "1", force=True, settings=store)
    assert done.cleared_challenger and _champion(store) == "1"
    assert "challenger" not in client.get_registered_model("churn").aliases

    promotion.promote("churn", "3", alias="challenger", settings=store)
    kept = promotion.promote("churn", before, force=True, settings=store)
    assert not kept.cleared_challenger  # another version won: the challenger stays
    assert promotion.drop_alias("churn", "challenger", settings=store) == "3"
    assert promotion.drop_alias("churn", "challenger", settings=store) is None
    with pytest.raises(ValueError, match="serves traffic"):
        promotion.drop_alias("churn", "champion", settings=store)


def test_cli_lists_and_refuses_with_exit_code(
    store: ModelSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide table: no wrapped cells
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.mlflow_tracking_uri)
    monkeypatch.setenv("CLIENTINSIGHT_MLFLOW_ARTIFACT_ROOT", str(store.mlflow_artifact_root))
    from models.settings import get_settings

    get_settings.cache_clear()
    try:
        assert main(["list"]) == 0
        listed = capsys.readouterr().out
        assert "churn" in listed and "@champion" in listed and "holdout_roc_auc" in listed
        assert main(["promote", "churn", "--version", "3"]) == 3
        assert "refused" in capsys.readouterr().err
        # A version the registry does not have: one line, no MLflow traceback.
        assert main(["promote", "churn", "--version", "99"]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert "version=99" in line and "not found" in line
        for argv, words in (
            (["--version", "abc"], "version 'abc' is not a version number"),
            (["--version", "0"], "version '0' is not a version number"),
            (["--version", "1", "--alias", "bad alias!"], "alias 'bad alias!': use letters"),
            (["--version", "1", "--alias", "latest"], "alias 'latest': use letters"),
        ):
            with pytest.raises(SystemExit) as exit_:
                main(["promote", "churn", *argv])
            assert exit_.value.code == 2
            [line] = capsys.readouterr().err.splitlines()
            assert words in line
    finally:
        get_settings.cache_clear()


def test_the_segment_model_is_gated_on_silhouette(tmp_path: Path) -> None:
    settings = mlflow_settings(tmp_path)
    assert train_tiny_credit(settings).segment.version == "1"
    assert train_tiny_credit(settings).segment.version == "2"  # same data and seed
    done = promotion.promote("credit-segment", "2", settings=settings)
    assert done.metric == "holdout silhouette" and done.previous == "1"
    assert done.candidate_score is not None and 0 < done.candidate_score <= 1
    assert done.delta == 0


def test_versions_trained_on_other_rows_are_not_judged_on_rows_one_of_them_trained_on(
    store: ModelSettings,
) -> None:
    """A run on another sample shares few hold-out rows with the champion's run: the gate says
    so instead of scoring the champion on rows it trained on; --force still promotes."""
    before = _champion(store)
    other = train_tiny_churn(store, rows=600).version
    assert other is not None
    shared = promotion.evaluation_rows("churn", [other, before], store)
    assert len(shared) < promotion.MIN_SHARED_ROWS
    with pytest.raises(promotion.NoSharedEvaluationSet, match=r"share .* hold-out rows"):
        promotion.promote("churn", other, settings=store)
    assert _champion(store) == before
    forced = promotion.promote("churn", other, force=True, settings=store)
    assert forced.forced and forced.delta is None and _champion(store) == other
    promotion.promote("churn", before, force=True, settings=store)
    same = promotion.evaluation_rows("churn", ["1", "2"], store)
    assert len(same) == len(promotion.evaluation_rows("churn", ["1"], store))
