"""Schemathesis against the service's own OpenAPI document (`/docs.json`): generated valid and
invalid requests for every route, a bounded number each. No answer may be a 5xx, and every
answer must match what the document says (status code, content type, body schema).

The Open Inference Protocol's REST routes are in the document too. The two file routes and
the protocol's infer and version-pinned routes skip one check (see `fuzz`). Driven through
Hypothesis directly: schemathesis's lazy pytest fixture mode relies on a pytest private
attribute that pytest 9 no longer has.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Examples per route: enough to hit each field's edge cases, bounded for CI.
EXAMPLES = 40


def test_every_route_answers_as_documented(sqlite_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{sqlite_server.url}/docs.json")
    failures: dict[str, str] = {}
    routes = 0
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures[f"document error {routes}"] = str(result.err())
            continue
        operation = result.ok()
        routes += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def fuzz(case: schemathesis.Case) -> None:
            excluded: list[Any] = []
            path = case.operation.path
            if path.endswith(("_file", "/infer")) or "{version}" in path:
                # A schema cannot say "a CSV with these columns" or "one tensor per column of
                # this model": a PNG, or a tensor named "x", is schema-valid and rightly
                # refused (415, 400), and any string is a valid version, but only loaded ones
                # are served (404). So "valid data must be accepted" does not apply to the
                # two file routes and the inference protocol's infer and pinned routes.
                # Every other check does.
                excluded.append(positive_data_acceptance)
            case.call_and_validate(base_url=sqlite_server.url, excluded_checks=excluded)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # every route's failures, all reported
            failures[f"{operation.method.upper()} {operation.path}"] = str(exc)[:3000]
    assert routes >= 13, "the OpenAPI document lists too few routes"
    assert not failures, "\n\n".join(f"{route}:\n{text}" for route, text in failures.items())
