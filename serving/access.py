"""The front door of the public API: API keys, per-key rate limits, request-body limits.

One ASGI middleware on the entry service, ahead of any parsing, so a request without a key or
over a limit costs almost nothing:

- every route needs a key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) except the
  open ones (health, metrics, the API docs: probes and Prometheus read them), and the admin
  routes (`/models`, `/admin/...`) need an admin key. Closed unless listed as open, so a route
  added later is guarded from its first line;
- exactly one key per request: two `X-API-Key` headers, or a Bearer token and an `X-API-Key`
  that differ, are refused (400) instead of letting one of them win;
- keys are compared by their SHA-256 (the configuration holds only hashes: keys are random and
  long, so a slow password hash would add nothing but latency) and never logged;
- each key has a token bucket per API worker: its rate per second, and a burst of its own or
  `burst_s` seconds of its rate; over it, 429 with `Retry-After`;
- bodies over the route's limit get 413 before they are read (Content-Length) or as soon as
  the count passes it (chunked uploads); the app then sees the client as gone.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from serving.errors import REFUSED_BY_FRONT_DOOR, ApiError
from serving.settings import AccessSettings, get_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes anyone may call: probes (ours, BentoML's and the Open Inference Protocol's),
#: metrics, the API documents and Swagger UI.
OPEN_ROUTES = frozenset(
    {
        "/",
        "/livez",
        "/readyz",
        "/healthz",
        "/metrics",
        "/docs.json",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
OPEN_PREFIXES = ("/static_content/",)
#: Routes only admin keys may call.
ADMIN_ROUTES = ("/models", "/admin/")
#: Routes that return customers' stored inputs: history keys (or admin keys) only.
HISTORY_ROUTES = ("/graphql",)

Access = Literal["open", "key", "history", "admin"]

#: A key entry: `name:sha256[:rate[:burst]]`.
NAME = re.compile(r"[\w.@-]{1,64}")
_ENTRY = re.compile(
    r"^(?P<name>[^:]*):(?P<digest>[^:]*)(?::(?P<rate>[^:]*))?(?::(?P<burst>[^:]*))?$"
)
_DIGEST = re.compile(r"[0-9a-f]{64}")
_RATE = re.compile(r"\d+(?:\.\d+)?|\.\d+")
#: Bounds on a key's own rate, in requests per second.
MIN_RATE, MAX_RATE = 0.01, 1_000_000.0


def hash_key(key: str) -> str:
    """What the configuration stores for a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def access(path: str) -> Access:
    """Who may call `path`: anyone, any key, or admin keys only."""
    if path in OPEN_ROUTES or path.startswith(OPEN_PREFIXES):
        return "open"
    if path == ADMIN_ROUTES[0] or path.startswith(ADMIN_ROUTES[1]):
        return "admin"
    if path.rstrip("/") in HISTORY_ROUTES:
        return "history"
    return "key"


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str
    admin: bool
    rate_per_s: float | None = None
    burst: int | None = None
    #: May read prediction history (`/graphql`); admin keys may too.
    history: bool = False

    def may(self, route: Access) -> bool:
        """Whether this key may call a route of that access level."""
        if route == "admin":
            return self.admin
        if route == "history":
            return self.admin or self.history
        return True


def check_name(name: str) -> str:
    """A key's name, or ValueError saying what a name may hold."""
    if NAME.fullmatch(name) is None:
        raise ValueError(
            f"key name {name!r}: use 1 to 64 letters, digits, '_', '.', '@' or '-' "
            "(no spaces or ':')"
        )
    return name


def check_rate(rate: float) -> float:
    """A key's rate in requests per second, or ValueError saying which rates are allowed."""
    if not math.isfinite(rate) or not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(
            f"rate {rate:g}: a key's rate must be between {MIN_RATE:g} and {MAX_RATE:,.0f} "
            "requests per second"
        )
    return rate


def format_rate(rate: float) -> str:
    """A rate as an entry holds it: a plain decimal, never an exponent."""
    return f"{rate:.6f}".rstrip("0").rstrip(".")


def parse_keys(text: str, *, admin: bool, variable: str, history: bool = False) -> list[ApiKey]:
    """`name:sha256[:rate[:burst]]` entries, separated by commas or newlines. A bad entry is
    an error naming the variable, the entry's position and which part is wrong, never the
    digest part (it may be a raw key pasted by mistake)."""
    keys = []
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
    for position, entry in enumerate(entries, start=1):
        where = f"{variable}: entry {position}"
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(f"{where} is not 'name:sha256-hex[:requests-per-second[:burst]]'")
        try:
            name = check_name(match["name"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if _DIGEST.fullmatch(match["digest"]) is None:
            raise ValueError(
                f"{where} ({name}): the second part must be the key's SHA-256 as 64 lowercase "
                "hex digits; store the hash, never the key (python -m serving.keys new NAME)"
            )
        rate = burst = None
        if match["rate"] is not None:
            if _RATE.fullmatch(match["rate"]) is None:
                raise ValueError(
                    f"{where} ({name}): rate {match['rate']!r} is not a number of requests per "
                    "second (e.g. 50 or 0.5)"
                )
            try:
                rate = check_rate(float(match["rate"]))
            except ValueError as exc:
                raise ValueError(f"{where} ({name}): {exc}") from None
        if match["burst"] is not None:
            if not match["burst"].isdigit() or int(match["burst"]) < 1:
                raise ValueError(
                    f"{where} ({name}): burst {match['burst']!r} is not a whole number of "
                    "requests of at least 1"
                )
            burst = int(match["burst"])
        keys.append(ApiKey(name, match["digest"], admin, rate, burst, history))
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


def burst_for(rate: float, burst_s: float) -> int:
    """The bucket size of a key without a burst of its own: `burst_s` seconds of its rate."""
    return max(1, math.ceil(rate * burst_s))


class AccessPolicy:
    """Which keys exist, what they may do and how fast, from the settings."""

    def __init__(
        self, settings: AccessSettings, body_limit: Callable[[str], int] | None = None
    ) -> None:
        keys = parse_keys(settings.api_keys, admin=False, variable="CLIENTINSIGHT_API_KEYS")
        keys += parse_keys(settings.admin_keys, admin=True, variable="CLIENTINSIGHT_ADMIN_KEYS")
        keys += parse_keys(
            settings.history_keys,
            admin=False,
            history=True,
            variable="CLIENTINSIGHT_HISTORY_KEYS",
        )
        self.keys = {key.digest: key for key in keys}
        if len(self.keys) != len(keys):
            raise ValueError("the same key hash appears twice in the API key settings")
        if settings.environment == "production" and not self.keys:
            raise ValueError(
                "CLIENTINSIGHT_ENV=production and no API keys: refusing to serve an open API. "
                "Set CLIENTINSIGHT_API_KEYS and CLIENTINSIGHT_ADMIN_KEYS (python -m serving.keys "
                "new NAME), or CLIENTINSIGHT_ENV=demo for a local demo"
            )
        self.open = not self.keys
        self.max_body_bytes = settings.max_body_bytes
        self.max_json_body_bytes = settings.max_json_body_bytes
        #: The body limit of each route (the JSON routes' is far below the uploads').
        self.body_limit = body_limit or (lambda _path: settings.max_body_bytes)
        self.buckets = {}
        for key in keys:
            rate = key.rate_per_s or settings.rate_limit_per_s
            burst = key.burst or burst_for(rate, settings.rate_limit_burst_s)
            self.buckets[key.digest] = TokenBucket(rate, burst)

    def describe(self) -> str:
        """The start-up log line: whether keys are required and how many (never which)."""
        if self.open:
            return (
                "authentication is OFF (CLIENTINSIGHT_ENV=demo, no API keys): every route is "
                "open to anyone who can reach this port"
            )
        admins = sum(key.admin for key in self.keys.values())
        history = sum(key.history for key in self.keys.values())
        return (
            f"authentication is ON: {len(self.keys) - admins - history} API keys, {history} "
            f"history keys and {admins} admin keys; every route but health, metrics and the "
            "API docs needs one"
        )

    def authorize(self, presented: str | None, route: Access) -> ApiKey | None:
        """The key that may call a route of level `route` now (None when none is needed),
        or the ApiError refusing it: 401 without a valid key, 403 when the key may not call
        it, 429 over the key's rate. Every protocol's front door asks this."""
        key = self.key_for(presented, route)
        if key is not None:
            self.charge(key)
        return key

    def key_for(self, presented: str | None, route: Access) -> ApiKey | None:
        """`authorize` without the rate: the key that may call `route` (None when none is
        needed), or ApiError 401 or 403."""
        if route == "open" or self.open:
            return None
        if presented is None:
            raise ApiError(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                code="missing_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = self.keys.get(hash_key(presented))
        if key is None:
            raise ApiError(
                401, "invalid API key", code="invalid_key", headers={"WWW-Authenticate": "Bearer"}
            )
        if not key.may(route):
            allowed = (
                "admin routes (/models, /admin/...)"
                if route == "admin"
                else (
                    "prediction history (/graphql): make a key with "
                    "'python -m serving.keys new NAME --history'"
                )
            )
            raise ApiError(403, f"the key '{key.name}' may not use {allowed}", code=f"not_{route}")
        return key

    def charge(self, key: ApiKey) -> None:
        """One request against `key`'s rate: ApiError(429) over it. A gRPC stream is
        authorized once and charged per request it carries."""
        bucket = self.buckets[key.digest]
        wait = bucket.take()
        if wait:
            retry = max(1, math.ceil(wait))
            raise ApiError(
                429,
                f"rate limit: the key '{key.name}' may send {bucket.rate:g} requests/s "
                f"(bursts of {bucket.burst}) to each API worker",
                code="rate_limited",
                extra={"retry_after_s": retry},
                headers={"Retry-After": str(retry)},
            )

    def presented(self, scope: Scope) -> str | None:
        """The one key the request presents (`Authorization: Bearer` or `X-API-Key`), None
        for none; ApiError(400) when it presents more than one."""
        return self.presented_in(scope.get("headers") or [])

    def presented_in(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """`presented`, from (lower-case name, value) pairs: HTTP headers or gRPC metadata."""
        bearer: list[str] = []
        api_keys: list[str] = []
        for name, value in headers:
            if name == b"authorization":
                text = value.decode("latin-1")
                if text[:7].lower() == "bearer ":
                    bearer.append(text[7:].strip())
            elif name == b"x-api-key":
                api_keys.append(value.decode("latin-1").strip())
        if len(bearer) > 1 or len(api_keys) > 1 or (bearer and api_keys and bearer != api_keys):
            raise ApiError(
                400,
                f"send one API key: this request has {len(bearer)} 'Authorization: Bearer' and "
                f"{len(api_keys)} 'X-API-Key' headers",
                code="ambiguous_key",
            )
        chosen = (bearer or api_keys or [""])[0]
        return chosen or None


class AccessGuard:
    """The middleware (see the module docstring). Starlette builds it on a worker's first
    request; the service checks the same settings at import, so a bad configuration stops the
    start-up instead."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or AccessPolicy(get_settings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
        except ApiError as refusal:
            refusal.log_line(scope.get("method", ""), scope["path"])
            await _send(send, refusal)
            return
        await self._limited(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        if not scope["path"].isprintable():
            # A decoded %0A or the like: no route has one, and BentoML's router would answer
            # a plain-text 404 where every other refusal is JSON.
            raise ApiError(404, "no route: the path holds a control character", code="no_route")
        limit = self.policy.body_limit(scope["path"])
        for name, value in scope.get("headers") or []:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _too_large(int(value), limit)
        route = access(scope["path"])
        if route == "open" or self.policy.open:
            return
        self.policy.authorize(self.policy.presented(scope), route)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with a body that may not grow past the limit (chunked uploads): past it,
        the client gets 413 and the app is told the client has gone (it stops reading)."""
        limit = self.policy.body_limit(scope["path"])
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                refused = True
                scope[REFUSED_BY_FRONT_DOOR] = True
                if not started:
                    refusal = _too_large(seen, limit, counted_so_far=True)
                    refusal.log_line(scope.get("method", ""), scope["path"])
                    await _send(send, refusal)
                return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; whatever the app answers goes nowhere
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, tracked)


async def _send(send: Send, error: ApiError) -> None:
    payload = error.encoded()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _too_large(size: int, limit: int, counted_so_far: bool = False) -> ApiError:
    what = f"more than {limit} bytes" if counted_so_far else f"{size} bytes"
    return ApiError(
        413,
        f"request body: {what} is over the limit of {limit} bytes for this route "
        "(CLIENTINSIGHT_MAX_BODY_BYTES for files, CLIENTINSIGHT_MAX_JSON_BODY_BYTES for JSON); "
        "split it",
        code="body_too_large",
        extra={"limit_bytes": limit},
    )
