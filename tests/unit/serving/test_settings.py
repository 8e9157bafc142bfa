"""Serving settings: per-family knobs under the family's prefix, and a bad value refused with
one line naming the variable."""

from __future__ import annotations

import pytest

from serving.settings import env_prefix, family_settings, refuse_bad_configuration


def test_each_family_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIENTINSIGHT_CARD_BALANCE_WORKERS", "3")
    monkeypatch.setenv("CLIENTINSIGHT_CHURN_MAX_BATCH_SIZE", "128")
    family_settings.cache_clear()
    try:
        assert env_prefix("card-balance") == "CLIENTINSIGHT_CARD_BALANCE_"
        assert family_settings("card-balance").workers == 3
        assert family_settings("churn").max_batch_size == 128
        assert family_settings("churn").workers == 1
    finally:
        family_settings.cache_clear()


@pytest.mark.parametrize("value", ["0", "x"])
def test_a_bad_family_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CLIENTINSIGHT_CHURN_WORKERS", value)
    family_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            refuse_bad_configuration(lambda: family_settings("churn"))
    finally:
        family_settings.cache_clear()
    message = str(stopped.value)
    assert message.startswith("clientinsight: cannot start: CLIENTINSIGHT_CHURN_WORKERS: ")
    assert "\n" not in message
