"""Known prediction rows for the history tests: a few families, versions, hours and shadows,
inserted directly so every figure an aggregate returns can be worked out by hand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from persistence.tables import predictions

#: The newest row's time; rows go back one minute each from here.
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CONTRACTS = ("Month-to-month", "One year", "Two year")
#: The churn rate by tenure band, as `/graphql` asks `persistence.history.groups` for it.
TENURE: dict[str, Any] = {
    "model_name": "churn",
    "document": "inputs",
    "key": "tenure",
    "bands": (12, 24, 48),
    "band_names": ("<12", "12-24", "24-48", ">=48"),
    "rate_key": "churn",
}


def churn_row(i: int, **overrides: Any) -> dict[str, Any]:
    """Churn row `i`: contract cycles, tenure i*5 months, churns when i is even."""
    churns = i % 2 == 0
    row: dict[str, Any] = {
        "id": uuid.UUID(int=i + 1),
        "request_id": f"req-{i}",
        "created_at": T0 - timedelta(minutes=i),
        "model_name": "churn",
        "model_version": "1" if i < 6 else "2",
        "model_versions": {"churn": "1" if i < 6 else "2"},
        "source": "api",
        "entity_id": f"c{i}",
        "score": 0.8 if churns else 0.2,
        "label": "high" if churns else "low",
        "inputs": {
            "customer_id": f"c{i}",
            "contract": CONTRACTS[i % 3],
            "tenure": i * 5,
            "payment_method": "Electronic check",
        },
        "outputs": {"customer_id": f"c{i}", "churn": churns, "churn_probability": 0.8},
        "latency_ms": float(10 + i),
        "role": "champion",
        "shadow_of": None,
        "protocol": "oip-rest" if i == 3 else "http",
    }
    row.update(overrides)
    return row


def credit_row(i: int) -> dict[str, Any]:
    """Credit row `i`: segment i % 2, eligible unless i is divisible by 3."""
    return {
        **churn_row(100 + i),
        "model_name": "credit-evaluation",
        "model_version": "1",
        "model_versions": {"credit-segment": "1", "credit-approval": "1"},
        "entity_id": f"a{i}",
        "score": 0.5,
        "label": str(i % 3 != 0),
        "inputs": {"applicant_id": f"a{i}", "income": 4.5},
        "outputs": {"applicant_id": f"a{i}", "eligible": i % 3 != 0, "segment": i % 2},
    }


def seed(engine: Engine, churn: int = 12, credit: int = 6) -> list[dict[str, Any]]:
    """`churn` churn rows, `credit` credit rows and one challenger shadow of churn row 0."""
    rows = [churn_row(i) for i in range(churn)] + [credit_row(i) for i in range(credit)]
    rows.append(
        churn_row(
            0,
            id=uuid.UUID(int=10_000),
            role="challenger",
            shadow_of=uuid.UUID(int=1),
            model_version="3",
            score=0.7,
        )
    )
    with engine.begin() as connection:
        connection.execute(insert(predictions), rows)
    return rows
