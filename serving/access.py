"""The front door of the public API: API keys, per-key rate limits, the request-body limit.

One ASGI middleware on the entry service, ahead of any parsing, so a request without a key or
over a limit costs almost nothing:

- prediction routes (`/churn/...`, `/credit/...`) need a key (`Authorization: Bearer <key>` or
  `X-API-Key: <key>`); admin routes (`/models`, `/admin/...`) need an admin key; health,
  metrics and the API docs stay open (probes and Prometheus scrape them);
- keys are compared by their SHA-256 (the configuration holds only hashes: keys are random and
  long, so a slow password hash would add nothing but latency) and never logged;
- each key has a token bucket per API worker: over it, 429 with `Retry-After`;
- bodies over `max_body_bytes` get 413 before they are read (Content-Length) or as soon as the
  count passes the limit (chunked uploads).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from serving.settings import AccessSettings, get_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREDICTION_PREFIXES = ("/churn/", "/credit/")
ADMIN_ROUTES = ("/models", "/admin/")
_ENTRY = re.compile(r"^(?P<name>[\w.@-]{1,64}):(?P<digest>[0-9a-f]{64})(?::(?P<rate>[0-9.]+))?$")


def hash_key(key: str) -> str:
    """What the configuration stores for a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str
    admin: bool
    rate_per_s: float | None = None


def parse_keys(text: str, *, admin: bool, variable: str) -> list[ApiKey]:
    """`name:sha256[:rate]` entries, separated by commas or newlines; a bad entry is an error
    naming the variable and the entry's position (not its content, which may be a raw key
    pasted by mistake)."""
    keys = []
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
    for position, entry in enumerate(entries, start=1):
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(
                f"{variable}: entry {position} is not 'name:sha256-hex[:requests-per-second]' "
                "(store the key's SHA-256, never the key: python -m serving.keys new NAME)"
            )
        rate = float(match["rate"]) if match["rate"] else None
        keys.append(ApiKey(match["name"], match["digest"], admin, rate))
    return keys


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; thread-safe."""

    rate: float
    burst: int
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self) -> float:
        """0 if a request may go now, else the seconds until one may."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


class AccessPolicy:
    """Which keys exist, what they may do and how fast, from the settings."""

    def __init__(self, settings: AccessSettings) -> None:
        keys = parse_keys(settings.api_keys, admin=False, variable="CLIENTINSIGHT_API_KEYS")
        keys += parse_keys(settings.admin_keys, admin=True, variable="CLIENTINSIGHT_ADMIN_KEYS")
        self.keys = {key.digest: key for key in keys}
        if len(self.keys) != len(keys):
            raise ValueError("the same key hash appears twice in the API key settings")
        if settings.environment == "production" and not self.keys:
            raise RuntimeError(
                "CLIENTINSIGHT_ENV=production and no API keys: refusing to serve an open API. "
                "Set CLIENTINSIGHT_API_KEYS and CLIENTINSIGHT_ADMIN_KEYS (python -m serving.keys "
                "new NAME), or CLIENTINSIGHT_ENV=demo for a local demo."
            )
        self.open = not self.keys
        self.max_body_bytes = settings.max_body_bytes
        self.buckets = {
            key.digest: TokenBucket(
                key.rate_per_s or settings.rate_limit_per_s, settings.rate_limit_burst
            )
            for key in keys
        }

    def key_for(self, headers: dict[bytes, bytes]) -> str | None:
        """The presented key, from `Authorization: Bearer` or `X-API-Key`."""
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization[:7].lower() == "bearer ":
            return authorization[7:].strip() or None
        presented = headers.get(b"x-api-key", b"").decode("latin-1").strip()
        return presented or None


def _route(path: str) -> str:
    if path.startswith(PREDICTION_PREFIXES):
        return "prediction"
    if path == ADMIN_ROUTES[0] or path.startswith(ADMIN_ROUTES[1]):
        return "admin"
    return "open"


async def _answer(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


class AccessGuard:
    """The middleware (see the module docstring). Starlette builds it on a worker's first
    request; the service checks the same settings in `__init__`, so a bad configuration stops
    the start-up instead."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or AccessPolicy(get_settings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        await self._limited(scope, receive, send, headers)

    def _refusal(
        self, scope: Scope, headers: dict[bytes, bytes]
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        limit = self.policy.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return 413, _too_large(int(length), limit), {}
        route = _route(scope["path"])
        if route == "open" or self.policy.open:
            return None
        presented = self.policy.key_for(headers)
        if presented is None:
            return (
                401,
                {
                    "error": "missing API key: send 'Authorization: Bearer <key>' or "
                    "'X-API-Key: <key>'"
                },
                {"WWW-Authenticate": "Bearer"},
            )
        key = self.policy.keys.get(hash_key(presented))
        if key is None:
            return 401, {"error": "invalid API key"}, {"WWW-Authenticate": "Bearer"}
        if route == "admin" and not key.admin:
            return (
                403,
                {"error": f"the key '{key.name}' may not use admin routes (/models, /admin/...)"},
                {},
            )
        bucket = self.policy.buckets[key.digest]
        wait = bucket.take()
        if wait:
            retry = max(1, math.ceil(wait))
            return (
                429,
                {
                    "error": f"rate limit: the key '{key.name}' may send {bucket.rate:g} "
                    f"requests/s (bursts of {bucket.burst}) to each API worker",
                    "retry_after_s": retry,
                },
                {"Retry-After": str(retry)},
            )
        return None

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> None:
        """The app, with a body that may not grow past the limit (chunked uploads)."""
        limit = self.policy.max_body_bytes
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _answer(send, 413, _too_large(seen, limit, counted_so_far=True), {})


def _too_large(size: int, limit: int, counted_so_far: bool = False) -> dict[str, Any]:
    what = f"more than {limit} bytes" if counted_so_far else f"{size} bytes"
    return {
        "error": f"request body: {what} is over the limit of {limit} bytes "
        "(CLIENTINSIGHT_MAX_BODY_BYTES); split the file",
        "limit_bytes": limit,
    }
