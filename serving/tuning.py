"""Small, tested workarounds for BentoML 1.4 costs on the request path.

Each one is measured in `bench/README.md` and checked by `tests/unit/serving/test_tuning.py`,
so an upgrade that fixes (or breaks) the behaviour shows up as a failing test, not as a silent
slowdown.
"""

from __future__ import annotations

from typing import Any


def fix_output_media_types(*services: Any) -> None:
    """Decide each API's response media type once, at import, instead of on every response.

    BentoML 1.4.39's `IOMixin.mime_type` rebuilds the output type's full JSON schema with pydantic
    for every response, only to learn it is "application/json": about a quarter of a worker's
    CPU at 64 concurrent clients (py-spy, entry and model worker alike). A descriptor with
    `media_type` set returns it directly, so setting it to what `mime_type()` computes now changes
    nothing but the cost.
    """
    for service in services:
        for api in service.apis.values():
            spec = api.output_spec
            if spec.media_type is None:
                spec.media_type = spec.mime_type()


def untraced() -> dict[str, Any]:
    """Service config that keeps OpenTelemetry's ASGI middleware from building a span per request.

    BentoML always installs the middleware; with no exporter configured the spans go nowhere but
    still cost about a tenth of a worker's CPU. Excluding every URL makes the middleware pass
    requests straight through.
    """
    return {"excluded_urls": [".*"]}
