"""Smoke test of ``benchmarks/async_engine.py``: every figure is measured at tiny sizes (no timing
assertions), the report prints them, and the benchmark drops the schemas it made."""

from __future__ import annotations

from types import ModuleType

import psycopg
import pytest

from benchmark_support import load_benchmark

pytestmark = pytest.mark.postgres


def load() -> ModuleType:
    return load_benchmark("async_engine")


def test_async_engine_benchmark_runs_at_tiny_sizes(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """(a)–(d) measured against one database: sleepers all complete, waiters are all released, both
    engines run every step; the report names each figure; no schema is left behind."""
    bench = load()
    args = bench.parse_args(
        ["--dsn", pg_dsn, "--raw-seconds", "0.2", "--sleepers", "20", "--sleep", "0.2", "--waiters", "10",
         "--samples", "10", "--runs", "5", "--steps", "3", "--concurrency", "2"]
    )  # fmt: skip
    results = bench.run_benchmark(args, log=lambda _msg: None)
    print(bench.report(results, args))

    assert results["raw_1"] > 0
    sleepers = results["sleepers"]
    assert sleepers["runs"] == 20 and sleepers["sleep_s"] == 0.2
    # 20 runs of a 0.2-s sleep each cannot all end sooner than one sleep after the engine started
    assert sleepers["enqueued_first_s"] >= 0.2 and sleepers["started_live_s"] >= 0.2
    assert 0 < sleepers["enqueued_first_threads"] < 50
    waiters = results["waiters"]
    assert waiters["waiters"] == 10 and 0 < waiters["busy_p50"] <= waiters["busy_p95"]
    for key in ("async_throughput", "sync_throughput"):
        assert results[key]["runs"] == 5 and results[key]["steps"] == 3 and results[key]["steps_per_s"] > 0
    out = capsys.readouterr().out
    assert "(a) raw INSERT+COMMIT" in out and "AsyncEngine:" in out and "Engine:" in out

    schemas = [results[k]["schema"] for k in ("sleepers", "waiters", "async_throughput", "sync_throughput")]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
        ).fetchone()
    assert left == (0,)
