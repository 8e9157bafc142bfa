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


def _tricky_frame() -> pd.DataFrame:
    """Values the schema accepts in several spellings, each column with repeats."""
    frame = _frame(8).astype(str)
    frame["SeniorCitizen"] = ["0", "1", "yes", "False", "1", "0", "true", "off"]
    frame["Partner"] = ["Yes", "No", "y", "N", "Yes", "1", "0", "on"]
    frame["tenure"] = ["0", "12", " 7 ", "12", "1200", "3", "+4", "0"]
    frame["MonthlyCharges"] = ["29.85", "1e2", "0", " 56.95 ", "29.85", "7", "0.0", "3.5"]
    frame["TotalCharges"] = ["", " ", "29.85", "1889.5", "", "0", "1e1", "12"]
    frame["customerID"] = ["a", " b ", "", "a", "7", "c", "d" * 128, "e"]
    frame["Contract"] = ["One year", "Two year", "Month-to-month"] + ["One year"] * 5
    return frame


@pytest.mark.parametrize("kind", ["csv-text", "typed"])
def test_columns_validate_exactly_as_rows(kind: str) -> None:
    frame = _tricky_frame()
    if kind == "typed":  # a Parquet-like frame: numbers and booleans as such, NaN for blanks
        frame = _frame(8)
        frame["tenure"] = list(range(8))
        frame["MonthlyCharges"] = [29.85, 1.5, 0.0, 7.0, 29.85, 3.0, 2.0, 1.0]
        frame["TotalCharges"] = [float("nan"), 1.0, 2.0, None, 3.0, 4.0, 5.0, 6.0]
        frame["SeniorCitizen"] = [0, 1, 0, 1, 0, 1, 0, 1]
        frame["Partner"] = [True, False] * 4
        frame["customerID"] = [1, 2, 3, 4, 5, 6, 7, 8]
    records = tabular.validate_rows(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    columns = tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert list(columns) == list(churn.Customer.model_fields)
    for name in churn.Customer.model_fields:
        expected = [getattr(r, name) for r in records]
        got = columns[name].tolist()
        assert got == expected, name
        assert [type(v) for v in got] == [type(v) for v in expected], name
    assert tabular.records(columns, churn.Customer) == records


def test_column_errors_are_reported_per_row_as_rows_are() -> None:
    frame = _tricky_frame()
    frame.loc[5, "tenure"] = "-5"
    frame.loc[6, "MonthlyCharges"] = "inf"
    frame.loc[1, "customerID"] = "x" * 129
    frame.loc[3, "SeniorCitizen"] = " 1 "  # booleans are not stripped
    with pytest.raises(tabular.TableError) as by_rows:
        tabular.validate_rows(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    with pytest.raises(tabular.TableError) as by_columns:
        tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert by_columns.value.problems == by_rows.value.problems
    assert [p["row"] for p in by_columns.value.problems] == [2, 4, 6, 7]


def test_absent_optional_fields_take_their_default() -> None:
    frame = _frame(2).drop(columns=["customerID"])
    columns = tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert columns["customer_id"].tolist() == [None, None]


def test_the_contracts_validate_column_by_column() -> None:
    """A model-level validator would silently send every upload down the slow row path."""
    from models import credit

    for schema in (churn.Customer, credit.Applicant):
        assert tabular._column_validatable(schema), schema.__name__


def test_csv_out_keeps_text_cells_byte_for_byte() -> None:
    frame = pd.DataFrame({"id": ["007", " a,b ", 'say "hi"', ""], "n": [1, 2, 3, 4]})
    frame["flag"] = [True, False, True, False]
    back = pd.read_csv(
        io.BytesIO(tabular.write_table(frame, "csv")), dtype=str, keep_default_na=False
    )
    assert back["id"].tolist() == frame["id"].tolist()
    assert back["flag"].str.lower().tolist() == ["true", "false", "true", "false"]


def test_csv_out_defuses_spreadsheet_formulas_but_not_numbers() -> None:
    frame = pd.DataFrame(
        {
            "note": ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3", "ok"],
            "amount": ["-12.5", "+3", "-1e5", "-.5", "7"],
            "flag": [True, False, True, False, True],
        }
    )
    back = pd.read_csv(
        io.BytesIO(tabular.write_table(frame, "csv")), dtype=str, keep_default_na=False
    )
    assert back["note"].tolist() == [
        '\'=HYPERLINK("http://x","y")',
        "'+cmd|' /C calc'!A0",
        "'@SUM(A1)",
        "'-2+3",
        "ok",
    ]
    assert back["amount"].tolist() == frame["amount"].tolist()
    # Typed formats carry types, not formulas: untouched.
    parquet, _ = tabular.read_table(tabular.write_table(frame, "parquet"))
    assert parquet["note"].tolist() == frame["note"].tolist()


def test_csv_out_keeps_every_digit_of_a_float() -> None:
    frame = pd.DataFrame(
        {"p": [0.7250247023501228, 0.1 + 0.2, float("nan"), 1e-17], "k": list("abcd")}
    )
    back = pd.read_csv(io.BytesIO(tabular.write_table(frame, "csv")))
    assert back["p"].tolist()[:2] == [0.7250247023501228, 0.30000000000000004]
    assert pd.isna(back["p"][2]) and back["p"][3] == 1e-17
