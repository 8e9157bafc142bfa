"""The protocol bench's ratios: taken within each round, so drift between rounds cancels."""

from __future__ import annotations

from argparse import Namespace

from bench.protocols import ratios, render


def _result(rps: float) -> dict[str, float]:
    return {
        "ok_rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "non_2xx": 0, "api_us": 1.0,
        "model_us": 1.0, "generator_us": 1.0, "rows_per_call": 1.0,
    }  # fmt: skip


def test_each_round_is_compared_with_its_own_baseline() -> None:
    # The machine halves its speed in round 2: medians of req/s would give 1500 / 1000 = 1.5x,
    # but in every round gRPC did 1.2x or 1.3x of JSON.
    runs = {
        ("grpc", "python", 64): [_result(2400), _result(1300), _result(1500)],
        ("json", "python", 64): [_result(2000), _result(1000), _result(1250)],
    }
    found = dict(ratios(runs, 64))
    assert found["gRPC unary / JSON (python)"] == [1.2, 1.3, 1.2]
    assert found["gRPC stream / JSON (python)"] == []
    assert found["OIP REST / JSON (wrk)"] == []


def test_a_baseline_that_answered_nothing_is_left_out() -> None:
    runs = {("grpc", "h2load", 1): [_result(10)], ("json", "wrk", 1): [_result(0)]}
    assert dict(ratios(runs, 1))["gRPC (h2load) / JSON (wrk)"] == []


def test_the_report_shows_the_median_ratio_and_its_range() -> None:
    runs = {
        ("grpc", "python", 64): [_result(2400), _result(1300), _result(1500)],
        ("json", "python", 64): [_result(2000), _result(1000), _result(1250)],
    }
    text = render(runs, Namespace(workers=1, seconds=10, rounds=3))
    assert "| grpc | python | 64 | 1,500 |" in text
    assert "| 64 | - | 1.20x [1.20-1.30] | - | - | - |" in text
