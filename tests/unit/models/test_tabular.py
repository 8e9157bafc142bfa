"""Uploads: format sniffing, round trips, row validation with row and column in every error."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from models import churn, tabular
from tests.unit.models.test_churn import IBM


def _frame(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame([IBM] * rows)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "arrow"])
def test_round_trip_keeps_columns_and_values(fmt: tabular.TableFormat) -> None:
    frame = _frame()
    data = tabular.write_table(frame, fmt)
    back, detected = tabular.read_table(data)
    assert detected == fmt
    assert list(back.columns) == list(frame.columns)
    assert back["customerID"].tolist() == frame["customerID"].tolist()


def test_format_comes_from_content_not_name() -> None:
    data = tabular.write_table(_frame(), "parquet")
    assert tabular.sniff_format(data) == "parquet"
    assert tabular.sniff_format(b"a,b\n1,2\n") == "csv"


def test_binary_garbage_is_415() -> None:
    with pytest.raises(tabular.TableError) as info:
        tabular.read_table(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x80")
    assert info.value.status == 415


def test_empty_upload_is_rejected() -> None:
    with pytest.raises(tabular.TableError, match="empty"):
        tabular.read_table(b"")


def test_rows_validate_with_ibm_names_and_blanks() -> None:
    frame = _frame()
    frame.loc[1, "TotalCharges"] = " "
    customers = tabular.validate_rows(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert len(customers) == 3
    assert customers[1].total_charges is None


def test_row_errors_name_row_and_field() -> None:
    frame = _frame(4)
    frame.loc[2, "tenure"] = "-5"
    with pytest.raises(tabular.TableError) as info:
        tabular.validate_rows(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert info.value.problems == [
        {"row": 3, "field": "tenure", "problem": "Input should be greater than or equal to 0"}
    ]


def test_missing_columns_are_listed() -> None:
    frame = _frame().drop(columns=["Contract", "tenure"])
    with pytest.raises(tabular.TableError, match="missing required columns") as info:
        tabular.validate_rows(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert {p["field"] for p in info.value.problems} == {"contract", "tenure"}


def test_same_field_twice_is_ambiguous() -> None:
    frame = _frame().assign(contract="One year")
    with pytest.raises(tabular.TableError, match="more than one column"):
        tabular.validate_rows(frame, churn.Customer, churn.COLUMN_ALIASES, 10)


def test_too_many_rows_is_413_and_states_the_limit() -> None:
    with pytest.raises(tabular.TableError, match="limit of 2 rows") as info:
        tabular.validate_rows(_frame(3), churn.Customer, churn.COLUMN_ALIASES, 2)
    assert info.value.status == 413


def test_utf8_bom_csv_is_read() -> None:
    data = "\ufeff" + _frame().to_csv(index=False)
    frame, _ = tabular.read_table(data.encode("utf-8"))
    assert frame.columns[0] == "customerID"
    assert len(pd.read_csv(io.StringIO(data))) == 3
