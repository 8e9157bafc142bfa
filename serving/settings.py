"""Who may call the API and how much: API keys, rate limits, the request-body limit."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AccessSettings(BaseSettings):
    """Read from the environment (a Kubernetes Secret in production) on first use."""

    model_config = SettingsConfigDict(extra="ignore")

    #: `production` refuses to start without API keys; `demo` (what `make up` runs) is open
    #: when no keys are set, and says so in its log.
    environment: Literal["demo", "production"] = Field(
        default="demo", validation_alias="CLIENTINSIGHT_ENV"
    )
    #: `name:sha256-of-key[:requests-per-second]` entries separated by commas or newlines;
    #: `python -m serving.keys new NAME` makes a key and its entry. Only hashes are stored.
    api_keys: str = Field(default="", validation_alias="CLIENTINSIGHT_API_KEYS")
    #: The same format; admin keys may also call the admin routes (`/models`, `/admin/...`).
    admin_keys: str = Field(default="", validation_alias="CLIENTINSIGHT_ADMIN_KEYS")
    #: Requests per second per key and API worker, unless the key's entry says otherwise.
    rate_limit_per_s: float = Field(
        default=200.0, gt=0, validation_alias="CLIENTINSIGHT_RATE_LIMIT_PER_S"
    )
    #: Requests a key may send at once above its rate (a token bucket's size).
    rate_limit_burst: int = Field(
        default=400, ge=1, validation_alias="CLIENTINSIGHT_RATE_LIMIT_BURST"
    )
    #: Largest request body accepted (413 above it): 128 MiB holds about a million CSV rows.
    max_body_bytes: int = Field(
        default=128 * 2**20, ge=1024, validation_alias="CLIENTINSIGHT_MAX_BODY_BYTES"
    )


@lru_cache(maxsize=1)
def get_settings() -> AccessSettings:
    """The process-wide access settings."""
    return AccessSettings()
