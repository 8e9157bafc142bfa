"""GraphQL over history at scale: a history page and every 7-day aggregate at 1M and 10M rows.

    .venv/bin/python -m bench.graphql [--small N] [--large N] [--runs 5]

Starts a throwaway PostgreSQL cluster (`tests/support/postgres.py`), migrates it, loads
`--small` rows spread over 90 days (three families, two versions each) server-side with
`INSERT ... SELECT generate_series`, times the queries `/graphql` runs (`persistence/history.py`,
median of `--runs`), grows the table to `--large` rows over the same 90 days, times them
again, prints the table with the ratios and writes it under `bench/results/`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from bench.run import publish
from persistence import history, migrate
from persistence.db import make_engine
from tests.support.postgres import throwaway_cluster

END = datetime(2026, 12, 1, tzinfo=UTC)
PERIOD_S = 90 * 86400

#: One statement loads rows `lo..hi`: the family, version, time, inputs and outputs follow
#: from the row number, so every run loads the same table.
LOAD = """
INSERT INTO predictions (id, request_id, created_at, model_name, model_version, model_versions,
    source, entity_id, score, label, inputs, outputs, latency_ms, role, shadow_of, protocol)
SELECT md5(g::text)::uuid, 'r' || (g / 4),
    CAST(:end AS timestamptz) - ((g::bigint * 7919) % CAST(:period AS integer)) * interval '1 s',
    f.name, v.version, jsonb_build_object(f.name, v.version),
    CASE WHEN g % 10 = 0 THEN 'file' ELSE 'api' END, 'e' || (g % 100000), s.score,
    CASE f.name WHEN 'credit-evaluation' THEN (s.score >= 0.5)::text
        ELSE CASE WHEN s.score < 0.3 THEN 'low' WHEN s.score < 0.6 THEN 'medium' ELSE 'high' END
    END,
    CASE f.name
        WHEN 'churn' THEN jsonb_build_object('contract',
            (ARRAY['Month-to-month','One year','Two year'])[1 + g % 3], 'tenure', g % 73,
            'payment_method', (ARRAY['Electronic check','Mailed check','Bank transfer (automatic)',
            'Credit card (automatic)'])[1 + g % 4])
        WHEN 'credit-evaluation' THEN jsonb_build_object('income', (g % 100) / 10.0)
        ELSE jsonb_build_object('student', g % 5 = 0, 'cards', g % 7)
    END,
    CASE f.name
        WHEN 'churn' THEN jsonb_build_object('churn', s.score >= 0.5, 'risk_band', 'x')
        WHEN 'credit-evaluation' THEN jsonb_build_object('eligible', s.score >= 0.5,
            'segment', g % 5)
        ELSE jsonb_build_object('expected_balance', s.score * 1000)
    END,
    5 + (g % 50), 'champion', NULL,
    CASE WHEN g % 20 = 0 THEN 'oip-rest' ELSE 'http' END
FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) AS g,
    LATERAL (SELECT (ARRAY['churn','credit-evaluation','card-balance'])[1 + g % 3] AS name) f,
    LATERAL (SELECT ((g / 7) % 2 + 1)::text AS version) v,
    LATERAL (SELECT ((g::bigint * 2654435761) % 1000) / 1000.0 AS score) s
"""

#: The 7-day aggregates `/graphql` offers for the catalog's families.
AGGREGATES: tuple[tuple[str, str, str, str, tuple[float, ...], str | None], ...] = (
    ("churn by contract", "churn", "inputs", "contract", (), "churn"),
    ("churn by tenure band", "churn", "inputs", "tenure", (12, 24, 48), "churn"),
    ("churn by payment method", "churn", "inputs", "payment_method", (), "churn"),
    ("approval by segment", "credit-evaluation", "outputs", "segment", (), "eligible"),
    ("balance by student", "card-balance", "inputs", "student", (), None),
)


def load(connection: Connection, lo: int, hi: int, chunk: int = 1_000_000) -> None:
    for start in range(lo, hi + 1, chunk):
        stop = min(hi, start + chunk - 1)
        connection.execute(text(LOAD), {"end": END, "period": PERIOD_S, "lo": start, "hi": stop})
        connection.commit()
        print(f"  loaded rows {start:,}..{stop:,}", flush=True)
    connection.execute(text("ANALYZE predictions"))
    connection.commit()


def median_ms(work: Callable[[], Any], runs: int) -> float:
    work()  # warm the cache: steady-state figures
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(connection: Connection, runs: int) -> dict[str, float]:
    """Milliseconds per query, median of `runs`."""
    since, until = END - timedelta(days=7), END
    churn = history.Filters(model_names=("churn",))
    count = connection.execute(text("SELECT count(*) FROM predictions")).scalar_one()
    deep = connection.execute(
        text(
            "SELECT created_at, id FROM predictions WHERE model_name = 'churn' "
            "ORDER BY created_at DESC, id DESC OFFSET :deep LIMIT 1"
        ),
        {"deep": min(100_000, count // 10)},
    ).one()
    cursor = history.Cursor(deep.created_at, deep.id)
    filtered = history.Filters(model_names=("churn",), label="high", source="api")
    # The rows were loaded into past hours at once; in service the rollups absorb each hour
    # as it ends. Start them afresh and time the one-off catch-up over all 90 days.
    connection.execute(text("DELETE FROM prediction_rollups"))
    connection.execute(text("DELETE FROM rollup_marks"))
    connection.commit()
    catch_up: list[Callable[[], Any]] = []
    figures = {
        "page 1 (churn, 20 rows)": median_ms(
            lambda: history.page(connection, filters=churn, first=20), runs
        ),
        "deep page (cursor 100k rows in, label+source)": median_ms(
            lambda: history.page(connection, filters=filtered, first=20, after=cursor), runs
        ),
    }
    for _name, model, document, key, bands, rate in AGGREGATES:
        names = tuple(f"b{i}" for i in range(len(bands) + 1)) if bands else ()

        def aggregate(
            model: str = model,
            document: str = document,
            key: str = key,
            bands: tuple[float, ...] = bands,
            names: tuple[str, ...] = names,
            rate: str | None = rate,
        ) -> Any:
            return history.groups(
                connection,
                model_name=model,
                document=document,
                key=key,
                bands=bands,
                band_names=names,
                rate_key=rate,
                since=since,
                until=until,
            )

        catch_up.append(aggregate)
    catch_up.append(lambda: history.hourly(connection, since=since, until=until))
    started = time.perf_counter()
    for first_call in catch_up:
        first_call()
    catching_up = (time.perf_counter() - started) * 1000
    labels = [f"7-day {a[0]}" for a in AGGREGATES] + ["7-day volume per version per hour"]
    for name, work in zip(labels, catch_up, strict=True):
        figures[name] = median_ms(work, runs)
    figures["one-off rollup catch-up, 90 days, all groupings"] = catching_up
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.graphql", description=__doc__)
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with throwaway_cluster() as cluster:
        url = cluster.create_database()
        migrate.upgrade(url)
        engine = make_engine(url)
        with engine.connect() as connection:
            started = time.monotonic()
            load(connection, 1, args.small)
            print(f"{args.small:,} rows in {time.monotonic() - started:.0f}s", flush=True)
            small = measure(connection, args.runs)
            print(small, flush=True)
            started = time.monotonic()
            load(connection, args.small + 1, args.large)
            print(f"{args.large:,} rows in {time.monotonic() - started:.0f}s", flush=True)
            large = measure(connection, args.runs)
        engine.dispose()
    lines = [
        f"# GraphQL over history: {args.small:,} vs {args.large:,} rows",
        "",
        f"PostgreSQL throwaway cluster, rows over 90 days, median of {args.runs} runs (ms).",
        "",
        f"| query | {args.small:,} rows | {args.large:,} rows | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in small:
        ratio = large[name] / small[name] if small[name] else float("nan")
        lines.append(f"| {name} | {small[name]:.1f} | {large[name]:.1f} | {ratio:.2f}x |")
    publish("\n".join(lines) + "\n", "graphql")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
