"""The server's settings: how it runs (`ServingSettings`: workers, batching, shadowing, reload,
timeouts, row limits; `FamilySettings`: per model family), and who may call it and how much
(`AccessSettings`: the address, API keys, rate limits, body and table limits)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

T = TypeVar("T")


class AccessSettings(BaseSettings):
    """Read from the environment (a Kubernetes Secret in production) on first use."""

    model_config = SettingsConfigDict(extra="ignore")

    #: `production` refuses to start without API keys; `demo` (what `make up` runs) is open
    #: when no keys are set, and says so in its log.
    environment: Literal["demo", "production"] = Field(
        default="demo", validation_alias="CLIENTINSIGHT_ENV"
    )
    #: The address the public port listens on: loopback unless the operator says otherwise
    #: (Kubernetes sets 0.0.0.0). `bentoml serve --host` and `BENTOML_HOST` override it.
    host: str = Field(default="127.0.0.1", validation_alias="CLIENTINSIGHT_HOST")
    #: `name:sha256-of-key[:requests-per-second[:burst]]` entries separated by commas or
    #: newlines; `python -m serving.keys new NAME` makes a key and its entry. Only hashes are
    #: stored.
    api_keys: str = Field(default="", validation_alias="CLIENTINSIGHT_API_KEYS")
    #: The same format; admin keys may also call the admin routes (`/models`, `/admin/...`).
    admin_keys: str = Field(default="", validation_alias="CLIENTINSIGHT_ADMIN_KEYS")
    #: The same format; history keys may also read stored predictions (`/graphql`), which hold
    #: customers' inputs. Admin keys may too.
    history_keys: str = Field(default="", validation_alias="CLIENTINSIGHT_HISTORY_KEYS")
    #: Requests per second per key and API worker, unless the key's entry says otherwise.
    rate_limit_per_s: float = Field(
        default=200.0, gt=0, validation_alias="CLIENTINSIGHT_RATE_LIMIT_PER_S"
    )
    #: A key may save up this many seconds of its rate for a burst (unless its entry sets a
    #: burst): 2 s of 200 requests/s is a burst of 400, 2 s of 2 requests/s a burst of 4.
    rate_limit_burst_s: float = Field(
        default=2.0, gt=0, le=3600, validation_alias="CLIENTINSIGHT_RATE_LIMIT_BURST_S"
    )
    #: Replaced by CLIENTINSIGHT_RATE_LIMIT_BURST_S (one burst for every rate let slow keys
    #: through at the fast keys' burst); refused when set, so no one relies on it unknowingly.
    retired_burst: str | None = Field(
        default=None, validation_alias="CLIENTINSIGHT_RATE_LIMIT_BURST"
    )
    #: Largest request body of a file route (413 above it): 128 MiB holds about a million CSV
    #: rows.
    max_body_bytes: int = Field(
        default=128 * 2**20, ge=1024, validation_alias="CLIENTINSIGHT_MAX_BODY_BYTES"
    )
    #: Largest body of a JSON route: 1,000 records in the IBM names take about 0.8 MB.
    max_json_body_bytes: int = Field(
        default=4 * 2**20, ge=1024, validation_alias="CLIENTINSIGHT_MAX_JSON_BODY_BYTES"
    )
    #: Most columns an uploaded table may have (checked from its header or metadata).
    max_columns: int = Field(default=1000, ge=1, validation_alias="CLIENTINSIGHT_MAX_COLUMNS")
    #: Largest decoded size of an uploaded table's data (Parquet and Arrow are checked before
    #: they are decompressed, so a small file that would expand past it is refused).
    max_table_bytes: int = Field(
        default=512 * 2**20, ge=2**20, validation_alias="CLIENTINSIGHT_MAX_TABLE_BYTES"
    )
    #: Threads per API worker that read, validate and write uploaded tables (off the event
    #: loop), and how many more uploads may wait for one; beyond that, 503 with Retry-After.
    upload_threads: int = Field(
        default=2, ge=1, le=32, validation_alias="CLIENTINSIGHT_UPLOAD_THREADS"
    )
    uploads_waiting: int = Field(
        default=4, ge=0, le=1000, validation_alias="CLIENTINSIGHT_UPLOADS_WAITING"
    )

    @field_validator("host")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address (127.0.0.1 for this machine only, 0.0.0.0 for "
                "every interface)"
            ) from None
        return value

    @field_validator("retired_burst")
    @classmethod
    def _retired(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                "no longer read: set "
                "CLIENTINSIGHT_RATE_LIMIT_BURST_S (seconds of a key's rate it may burst, "
                "default 2) or give the key its own burst (name:sha256:rate:burst)"
            )
        return None


class ServingSettings(BaseSettings):
    """How the service runs, whatever the family (per-family knobs: `FamilySettings`)."""

    model_config = SettingsConfigDict(extra="ignore")

    #: Seconds between two looks at the registry's aliases in each model worker; 0: no reload.
    reload_interval_s: float = Field(
        default=10.0, ge=0, validation_alias="CLIENTINSIGHT_RELOAD_INTERVAL_S"
    )
    #: Share of API requests also scored by the challenger, off the request path.
    shadow_sample: float = Field(
        default=0.1, ge=0, le=1, validation_alias="CLIENTINSIGHT_SHADOW_SAMPLE"
    )
    #: Records waiting for shadow scoring per API worker and family; above it, samples are
    #: skipped.
    shadow_max_pending: int = Field(
        default=5000, ge=1, validation_alias="CLIENTINSIGHT_SHADOW_MAX_PENDING"
    )
    #: Model-service calls in flight per family and API worker (serving/batching.py).
    model_calls_in_flight: int = Field(
        default=2, ge=1, le=64, validation_alias="CLIENTINSIGHT_MODEL_CALLS_IN_FLIGHT"
    )
    #: While a model call is in flight, the next starts once this many records wait (or the
    #: oldest has waited `batch_max_hold_s`): fuller batches instead of half-empty calls.
    batch_fill_rows: int = Field(
        default=32, ge=0, le=4096, validation_alias="CLIENTINSIGHT_BATCH_FILL_ROWS"
    )
    batch_max_hold_s: float = Field(
        default=0.01, ge=0, le=1, validation_alias="CLIENTINSIGHT_BATCH_MAX_HOLD_S"
    )
    #: After a model call that returns with `batch_fill_rows` records outstanding (load that
    #: fills calls), the next waits this long for them instead of starting at once (0: at once).
    batch_busy_hold_s: float = Field(
        default=0.003, ge=0, le=1, validation_alias="CLIENTINSIGHT_BATCH_BUSY_HOLD_S"
    )
    api_workers: int = Field(default=1, ge=1, validation_alias="CLIENTINSIGHT_API_WORKERS")
    #: The Open Inference Protocol's gRPC port, served by every API worker (they share it);
    #: 0 turns gRPC off. It listens on the same address as the HTTP port.
    grpc_port: int = Field(default=8001, ge=0, le=65535, validation_alias="CLIENTINSIGHT_GRPC_PORT")
    #: grpc.aio servers per API worker on that port (serving/oip/grpc.py says why several).
    grpc_servers: int = Field(
        default=16, ge=1, le=64, validation_alias="CLIENTINSIGHT_GRPC_SERVERS"
    )
    #: OpenTelemetry spans per request. Off by default: with no exporter configured they cost
    #: CPU for nothing (bench/README.md).
    tracing: bool = Field(default=False, validation_alias="CLIENTINSIGHT_TRACING")
    #: One access-log line per public request (the model services never log the internal hop).
    access_log: bool = Field(default=True, validation_alias="CLIENTINSIGHT_ACCESS_LOG")
    #: Seconds a model-service call may take before the entry API gives up with a 503.
    model_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="CLIENTINSIGHT_MODEL_TIMEOUT_S"
    )
    #: Rows per model-service call when scoring an uploaded file.
    file_chunk_rows: int = Field(
        default=2000, ge=1, validation_alias="CLIENTINSIGHT_FILE_CHUNK_ROWS"
    )
    max_rows_per_request: int = Field(
        default=1000, ge=1, validation_alias="CLIENTINSIGHT_MAX_ROWS_PER_REQUEST"
    )
    max_rows_per_file: int = Field(
        default=1_000_000, ge=1, validation_alias="CLIENTINSIGHT_MAX_ROWS_PER_FILE"
    )


class FamilySettings(BaseSettings):
    """One family's knobs, `CLIENTINSIGHT_<FAMILY>_WORKERS` and `..._MAX_BATCH_SIZE` (the
    family's name in capitals, `-` as `_`); `family_settings(name)` reads them."""

    model_config = SettingsConfigDict(extra="ignore")

    #: Model-service worker processes of this family.
    workers: int = Field(default=1, ge=1, le=64)
    #: Records per model-service call (adaptive batching, serving/batching.py).
    max_batch_size: int = Field(default=64, ge=1, le=4096)


def env_prefix(family: str) -> str:
    """`CLIENTINSIGHT_CHURN_`, `CLIENTINSIGHT_CREDIT_`, ...: where a family's knobs live."""
    return f"CLIENTINSIGHT_{family.upper().replace('-', '_')}_"


@cache
def family_settings(family: str) -> FamilySettings:
    """The family's settings from its prefixed variables, read once per family; a bad value
    is a ValueError naming the variable (pydantic would name only the field)."""
    prefix = env_prefix(family)
    try:
        return FamilySettings(_env_prefix=prefix)
    except ValidationError as exc:
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ValueError(problems) from None


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    """The process-wide serving settings."""
    return ServingSettings()


@lru_cache(maxsize=1)
def get_settings() -> AccessSettings:
    """The process-wide access settings."""
    return AccessSettings()


def configuration_problem(exc: ValueError) -> str:
    """A bad setting as one line: each variable and what is wrong with it."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    return str(exc)


def refuse_bad_configuration(load: Callable[[], T]) -> T:
    """`load()`, or, for a mistake in the configuration, stop the process with one line that
    names it (a traceback would bury the reason at the bottom of sixty lines)."""
    try:
        return load()
    except ValueError as exc:  # pydantic's ValidationError is one
        raise SystemExit(f"clientinsight: cannot start: {configuration_problem(exc)}") from None
