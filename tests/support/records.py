"""Shared records for tests: how a decision's predictions are stored, without a model family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recording:
    """What `persistence.writer.prediction_block` reads (a family declares the real one)."""

    decision: str
    primary_model: str
    entity_field: str
    score_field: str
    label_field: str


def recording(
    decision: str,
    *,
    entity_field: str,
    score_field: str,
    label_field: str,
    primary_model: str | None = None,
) -> Recording:
    return Recording(decision, primary_model or decision, entity_field, score_field, label_field)
