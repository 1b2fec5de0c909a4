"""Smoke test of ``benchmarks/dashboard.py``: it fills, renders and reports at a tiny size (no timing
assertions)."""

from __future__ import annotations

from types import ModuleType

import psycopg
import pytest

from benchmark_support import load_benchmark

pytestmark = pytest.mark.postgres


def load() -> ModuleType:
    return load_benchmark("dashboard")


def test_dashboard_benchmark_runs_at_a_tiny_size(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark fills a schema, renders every page, times the calls, reports, drops its schema."""
    bench = load()
    args = bench.parse_args(["--dsn", pg_dsn, "--runs", "300", "--renders", "2", "--explain"])
    results = bench.run_benchmark(args, log=lambda _msg: None)
    print(bench.report(results, args))

    assert len(results["pages"]) == 5 and all(f["p50"] > 0 for f in results["pages"].values())
    assert set(results["calls"]) == {"get_runs (50)", "count_runs", "list_workflows"}
    out = capsys.readouterr().out
    assert "deep cursor page, status=failed" in out and "Aggregate" in out  # the EXPLAIN
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (results["schema"],)
        ).fetchone()
    assert left == (0,)
