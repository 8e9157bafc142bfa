"""Table rows as contract records: column mapping, and validation naming row and column."""

from __future__ import annotations

import pandas as pd
import pytest

from models import churn, tabular
from tests.support.records import IBM


def _frame(rows: int = 3) -> pd.DataFrame:
    return pd.DataFrame([IBM] * rows)


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


def test_too_many_rows_is_refused_for_its_size_and_states_the_limit() -> None:
    with pytest.raises(tabular.TableError, match="limit of 2 rows") as info:
        tabular.validate_rows(_frame(3), churn.Customer, churn.COLUMN_ALIASES, 2)
    assert info.value.too_large


def _tricky_frame() -> pd.DataFrame:
    """Values the schema accepts in several spellings, each column with repeats."""
    frame = _frame(8).astype(str)
    frame["SeniorCitizen"] = ["0", "1", "yes", "False", "1", "0", "true", "off"]
    frame["Partner"] = ["Yes", "No", "y", "N", "Yes", "1", "0", "on"]
    frame["tenure"] = ["0", "12", " 7 ", "12", "600", "3", "+4", "0"]
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


def test_bad_values_are_reported_at_every_row_holding_them_in_row_order() -> None:
    """A distinct value is checked once; its error is spread back to the rows that hold it."""
    frame = _frame(5000).astype(str)
    frame.loc[4321, "tenure"] = "-1"
    frame.loc[17, "tenure"] = "-1"
    frame.loc[900, "Contract"] = "Forever"
    with pytest.raises(tabular.TableError) as info:
        tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 10_000)
    assert info.value.message == "file: 3 invalid values (first 3 listed)"
    assert [(p["row"], p["field"]) for p in info.value.problems] == [
        (18, "tenure"),
        (901, "Contract"),
        (4322, "tenure"),
    ]


def test_at_most_twenty_problems_are_listed_but_all_are_counted() -> None:
    frame = _frame(50).astype(str)
    frame["tenure"] = "-1"
    with pytest.raises(tabular.TableError) as info:
        tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 100)
    assert info.value.message == "file: 50 invalid values (first 20 listed)"
    assert [p["row"] for p in info.value.problems] == list(range(1, 21))


@pytest.mark.parametrize("nested", [[1, 2], {"a": 1}])
def test_a_column_of_nested_values_is_refused_by_name(nested: object) -> None:
    frame = _frame(3)
    frame["tenure"] = pd.Series([nested] * 3, dtype=object)
    with pytest.raises(tabular.TableError, match="column 'tenure' holds nested values") as info:
        tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert info.value.problems == [
        {"field": "tenure", "problem": "nested values (lists or structs)"}
    ]


def test_a_boolean_column_is_no_number() -> None:
    """A Parquet boolean column where a count belongs would otherwise read as 0 and 1."""
    frame = _frame(2)
    frame["tenure"] = [True, False]
    with pytest.raises(tabular.TableError) as info:
        tabular.validate_columns(frame, churn.Customer, churn.COLUMN_ALIASES, 10)
    assert {p["problem"] for p in info.value.problems} == {
        "Value error, a number is expected, not true or false"
    }
