"""Smoke test of ``benchmarks/engine.py``: every figure is measured at tiny sizes (no timing assertions)."""

from __future__ import annotations

import math
from types import ModuleType

import pytest

from benchmark_support import load_benchmark

pytestmark = pytest.mark.postgres


def load() -> ModuleType:
    return load_benchmark("engine")


def test_engine_benchmark_runs_at_tiny_sizes(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark measures (a)–(g) against one database, prints its table and drops its schemas."""
    bench = load()
    args = bench.parse_args(
        ["--dsn", pg_dsn, "--runs", "4", "--steps", "3", "--concurrency", "2", "--raw-seconds", "0.2",
         "--latency-runs", "3", "--long-steps", "25", "--window", "5", "--api-runs", "3"]
    )  # fmt: skip
    results = bench.run_benchmark(args, log=lambda _msg: None)
    print(bench.report(results, args))

    assert results["raw_1"] > 0 and results["raw_n"] > 0
    for key in ("throughput", "round_trips"):
        assert results[key]["runs"] == 4 and results[key]["steps"] == 3
        assert results[key]["steps_per_s"] > 0
    latency = results["latency"]
    assert all(latency[k] > 0 for k in ("start_p50", "start_p95", "event_p50", "event_p95"))
    api = results["public_api"]
    assert api["runs"] == 3 and api["steps_per_s"] > 0
    assert api["callers"] == 2 and api["callers_runs"] == 3 and api["callers_steps_per_s"] > 0
    assert all(api[k] > 0 for k in ("start_p50", "start_p95", "event_p50", "event_p95"))
    assert results["recording"]["steps"] == 25 and math.isfinite(results["recording"]["ratio"])
    traced = results["round_trips"]
    assert traced["round_trips_per_step"] > 0 and traced["commits_per_step"] > 0
    out = capsys.readouterr().out
    assert "(a) raw INSERT+COMMIT" in out and "(f) round trips per step" in out

    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)",
            ([results[k]["schema"] for k in ("throughput", "latency", "recording", "round_trips")],),
        ).fetchone()
    assert left == (0,)
