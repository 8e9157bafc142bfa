"""Where the default local stores live: beside the code (the checkout, or a Bento's src)."""

from __future__ import annotations

from pathlib import Path

#: The checkout (or the Bento's src directory).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
