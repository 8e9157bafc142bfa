"""The benchmark reads wrk's report correctly (a wrong parse would fake every ratio)."""

from __future__ import annotations

import math

from bench.run import parse_wrk

REPORT = """Running 8s test @ http://127.0.0.1:4000/churn/predict
  2 threads and 64 connections
  Latency Distribution
     50%  212.00ms
     75%  300.10ms
     90%  400.00ms
     99%    1.20s
  1992 requests in 8.00s, 700.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 10
Requests/sec:    249.00
"""


def test_ok_rate_latency_and_failures() -> None:
    result = parse_wrk(REPORT)
    assert result["ok_rps"] == (1992 - 10) / 8.0
    assert result["p50_ms"] == 212.0 and result["p99_ms"] == 1200.0
    assert result["non_2xx"] == 13


def test_no_distribution_when_nothing_completed() -> None:
    report = "  0 requests in 8.00s, 0.00B read\n"
    result = parse_wrk(report)
    assert result["ok_rps"] == 0 and math.isnan(result["p99_ms"])
