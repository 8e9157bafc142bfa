"""Real parts the suite needs: skip loudly on a user's machine, fail in CI (REQUIRE_<PART>=1)."""

from __future__ import annotations

import os

import pytest


def missing(part: str, reason: str) -> None:
    """Skip (or, when REQUIRE_<PART>=1, fail) because `part` is not available."""
    message = f"{part} not available: {reason}"
    if os.environ.get(f"REQUIRE_{part.upper()}") == "1":
        pytest.fail(f"REQUIRE_{part.upper()}=1 but {message}", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {message} (set REQUIRE_{part.upper()}=1 to make this fail)")
