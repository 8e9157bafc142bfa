"""The registry's alias rules on a real (temporary) MLflow store: an alias resolves to a version or
says loudly that there is none, "cannot tell" is never read as "no alias", a model already in
memory is reused under its new alias, and each version carries its own decision threshold."""

from __future__ import annotations

import dataclasses
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models import registry
from models.registry import ModelNotAvailableError, ServedModel
from models.settings import ModelSettings
from tests.support.models import mlflow_settings
from tests.support.processes import failures_at_once

NAME = "tiny"


@dataclass(frozen=True)
class Store:
    settings: ModelSettings
    features: pd.DataFrame


def _register(features: pd.DataFrame, target: pd.Series, tags: dict[str, str]) -> str:
    """A small fitted pipeline logged in its own run and registered as a new version of NAME."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, target)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name=NAME)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(NAME, version, key, value)
    return version


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """NAME at version 1 (@champion, threshold 0.3) and version 2 (@challenger, no threshold)."""
    settings = mlflow_settings(Path(tmp_path_factory.mktemp("registry")))
    registry.ensure_experiment(settings)
    rng = np.random.default_rng(0)
    features = pd.DataFrame({"x": rng.normal(size=60), "y": rng.normal(size=60)})
    target = (features["x"] > features["y"]).astype(int)
    assert _register(features, target, {registry.THRESHOLD_TAG: "0.3"}) == "1"
    assert _register(features, target, {}) == "2"
    client = registry.configure_mlflow(settings)
    client.set_registered_model_alias(NAME, "champion", "1")
    client.set_registered_model_alias(NAME, "challenger", "2")
    return Store(settings, features)


@pytest.fixture
def client(store: Store) -> Any:
    return registry.configure_mlflow(store.settings)


@pytest.fixture(scope="module")
def champion(store: Store) -> ServedModel:
    return registry.load(NAME, "champion", store.settings)


@pytest.fixture(scope="module")
def challenger(store: Store) -> ServedModel:
    return registry.load(NAME, "challenger", store.settings)


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a model from the store fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded from the store again")

    monkeypatch.setattr(mlflow.sklearn, "load_model", refuse)


# -- alias_version ---------------------------------------------------------------------------


def test_alias_version_names_the_version_each_alias_points_to(client: Any) -> None:
    assert registry.alias_version(client, NAME, "champion") == "1"
    assert registry.alias_version(client, NAME, "challenger") == "2"


def test_alias_version_is_none_for_a_missing_alias(client: Any) -> None:
    assert registry.alias_version(client, NAME, "no-such-alias") is None


def test_alias_version_is_none_for_a_missing_registered_model(client: Any) -> None:
    assert registry.alias_version(client, "no-such-model", "champion") is None


def test_alias_version_follows_an_alias_that_moves_and_one_that_is_removed(client: Any) -> None:
    client.set_registered_model_alias(NAME, "moving", "1")
    assert registry.alias_version(client, NAME, "moving") == "1"
    client.set_registered_model_alias(NAME, "moving", "2")
    assert registry.alias_version(client, NAME, "moving") == "2"
    client.delete_registered_model_alias(NAME, "moving")
    assert registry.alias_version(client, NAME, "moving") is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_alias_version_raises_when_the_tracking_server_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listens at the tracking URI: that is "cannot tell", never "no alias"."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://127.0.0.1:{_closed_port()}"
    down = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    with pytest.raises(MlflowException):
        registry.alias_version(down, NAME, "champion")


class FailingClient:
    """A registry client whose alias look-up fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.tracking_uri = "http://registry.invalid"

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "code",
    [
        "INTERNAL_ERROR",
        "TEMPORARILY_UNAVAILABLE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "REQUEST_LIMIT_EXCEEDED",
        "BAD_REQUEST",
    ],
)
def test_alias_version_raises_any_other_mlflow_failure(code: str) -> None:
    error = MlflowException("the registry failed", error_code=databricks_pb2.ErrorCode.Value(code))
    with pytest.raises(MlflowException) as raised:
        registry.alias_version(cast(Any, FailingClient(error)), NAME, "champion")
    assert raised.value is error


def test_alias_version_lets_a_failure_that_is_not_mlflows_through() -> None:
    with pytest.raises(ConnectionResetError):
        failing = cast(Any, FailingClient(ConnectionResetError("reset")))
        registry.alias_version(failing, NAME, "champion")


# -- resolve ---------------------------------------------------------------------------------


def test_resolve_gives_the_version_the_alias_points_to(client: Any) -> None:
    version = registry.resolve(client, NAME, "challenger")
    assert str(version.version) == "2" and version.name == NAME


@pytest.mark.parametrize(
    ("name", "alias"), [(NAME, "no-such-alias"), ("no-such-model", "champion")]
)
def test_resolve_names_the_model_the_alias_and_how_to_train_it(
    client: Any, name: str, alias: str
) -> None:
    with pytest.raises(ModelNotAvailableError) as raised:
        registry.resolve(client, name, alias)
    message = str(raised.value)
    assert f"registered model '{name}'" in message
    assert f"alias '{alias}'" in message
    assert "`python -m training " in message  # the family's subcommand, or FAMILY
    assert client.tracking_uri in message  # which store was asked


def test_load_and_has_alias_agree_on_a_missing_alias(store: Store) -> None:
    assert registry.has_alias(NAME, "champion", store.settings)
    assert not registry.has_alias(NAME, "no-such-alias", store.settings)
    with pytest.raises(ModelNotAvailableError, match="no-such-alias"):
        registry.load(NAME, "no-such-alias", store.settings)


# -- load ------------------------------------------------------------------------------------


def test_load_serves_the_version_the_alias_resolves_to(
    store: Store, client: Any, champion: ServedModel, challenger: ServedModel
) -> None:
    assert (champion.name, champion.alias, champion.version) == (NAME, "champion", "1")
    assert (challenger.alias, challenger.version) == ("challenger", "2")
    assert champion.run_id == client.get_model_version(NAME, "1").run_id
    assert champion.run_id != challenger.run_id
    probabilities = champion.predictor.predict_proba(store.features)[:, 1]
    assert probabilities.shape == (len(store.features),)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_without_an_alias_load_serves_the_serving_alias(store: Store) -> None:
    served = registry.load(NAME, settings=store.settings)
    assert (served.alias, served.version) == (store.settings.serving_alias, "1")


def test_a_promoted_model_already_in_memory_is_reused_under_its_new_alias(
    store: Store, client: Any, champion: ServedModel, challenger: ServedModel, no_loading: None
) -> None:
    client.set_registered_model_alias(NAME, "promoted", "2")  # the challenger is promoted
    reuse = (None, champion, challenger)
    served = registry.load(NAME, "promoted", store.settings, reuse=reuse)
    assert (served.name, served.version, served.alias) == (NAME, "2", "promoted")
    assert served.model is challenger.model and served.predictor is challenger.predictor
    assert served.loaded_at == challenger.loaded_at
    assert challenger.alias == "challenger"  # the reused one itself is left as it was


def test_a_model_of_another_version_or_name_is_not_reused(
    store: Store, champion: ServedModel
) -> None:
    other_name = dataclasses.replace(champion, name="another-model", version="2")
    served = registry.load(NAME, "challenger", store.settings, reuse=(champion, other_name))
    assert (served.name, served.version, served.alias) == (NAME, "2", "challenger")
    assert served.model is not champion.model


# -- thresholds ------------------------------------------------------------------------------


def test_each_version_serves_its_own_stored_threshold(
    champion: ServedModel, challenger: ServedModel
) -> None:
    assert champion.threshold == pytest.approx(0.3)
    assert champion.describe()["decision_threshold"] == pytest.approx(0.3)
    # Version 2 stored none: it decides at 0.5, and /models says there is no stored cut-off.
    assert challenger.threshold == 0.5
    assert challenger.describe()["decision_threshold"] is None


def test_describe_is_json_and_names_the_version(champion: ServedModel) -> None:
    described = json.loads(json.dumps(champion.describe()))
    assert described["name"] == NAME and described["alias"] == "champion"
    assert described["version"] == "1" and described["run_id"] == champion.run_id
    assert described["explanations"]["status"] == "off"  # no stored evaluation set
    assert described["explanations"]["reason"]


@pytest.mark.parametrize(
    ("tags", "threshold", "described"),
    [({}, 0.5, None), ({"decision_threshold": "0.42"}, 0.42, 0.42), ({"other": "1"}, 0.5, None)],
)
def test_threshold_comes_from_the_version_tag(
    tags: dict[str, str], threshold: float, described: float | None
) -> None:
    served = ServedModel(
        name=NAME,
        alias="champion",
        version="7",
        run_id="r",
        source="s",
        metrics={},
        tags=tags,
        model=None,
    )
    assert served.threshold == pytest.approx(threshold)
    assert served.describe()["decision_threshold"] == described


def test_resolve_does_not_read_a_registry_failure_as_no_model() -> None:
    from mlflow.exceptions import MlflowException

    class Down:
        tracking_uri = "postgresql://ops:s3cret@db/mlflow"

        def get_model_version_by_alias(self, name: str, alias: str) -> Any:
            raise MlflowException("connection refused", error_code=databricks_pb2.INTERNAL_ERROR)

    with pytest.raises(MlflowException, match="connection refused"):
        registry.resolve(Down(), "churn", "champion")  # type: ignore[arg-type]


def test_a_missing_model_message_names_the_family_and_hides_the_password() -> None:
    from mlflow.exceptions import MlflowException

    class Empty:
        tracking_uri = "postgresql://ops:s3cret@db/mlflow"

        def get_model_version_by_alias(self, name: str, alias: str) -> Any:
            raise MlflowException(
                "no such alias", error_code=databricks_pb2.INVALID_PARAMETER_VALUE
            )

    with pytest.raises(ModelNotAvailableError) as raised:
        registry.resolve(Empty(), "credit-segment", "champion")  # type: ignore[arg-type]
    message = str(raised.value)
    assert "`python -m training credit`" in message
    assert "s3cret" not in message and "postgresql://ops:***@db/mlflow" in message


_FIRST_TOUCH = """
from models import registry
from models.settings import ModelSettings
client = registry.configure_mlflow(ModelSettings(MLFLOW_TRACKING_URI=sys.argv[2]))
client.search_registered_models(max_results=1)
client.search_experiments(max_results=1)
"""


def test_model_workers_starting_together_on_a_fresh_store_leave_it_whole(
    tmp_path: Path,
) -> None:
    """Several model workers touching a fresh SQLite store at once: one creates it, the others
    wait, and the store takes a new experiment afterwards (half-migrated, it never would)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert failures_at_once(_FIRST_TOUCH, uri) == []
    client = registry.configure_mlflow(ModelSettings(MLFLOW_TRACKING_URI=uri))
    assert client.create_experiment("after-the-race", artifact_location=tmp_path.as_uri())
