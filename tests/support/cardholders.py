"""Shared card-balance records: one cardholder in snake_case, the same one in ISLR names."""

from __future__ import annotations

from typing import Any

HOLDER: dict[str, Any] = {
    "cardholder_id": "c1",
    "income": 14.891,
    "limit": 3606,
    "rating": 283,
    "cards": 2,
    "age": 34,
    "education": 11,
    "student": False,
    "married": True,
}
ORIGINAL: dict[str, Any] = {
    "ID": 1,
    "Income": 14.891,
    "Limit": 3606,
    "Rating": 283,
    "Cards": 2,
    "Age": 34,
    "Education": 11,
    "Student": "No",
    "Married": "Yes",
}
