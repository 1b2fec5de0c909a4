"""Smoke test of ``benchmarks/prune.py``: every figure is measured at a tiny size (no timing assertions)."""

from __future__ import annotations

from types import ModuleType

import psycopg
import pytest

from benchmark_support import load_benchmark

pytestmark = pytest.mark.postgres


def load() -> ModuleType:
    return load_benchmark("prune")


def test_prune_benchmark_runs_at_a_tiny_size(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark fills, prunes in batches beside a concurrent writer, checks that exactly the
    doomed runs went, prints its table (and a plan with --explain) and drops its schemas."""
    bench = load()
    args = bench.parse_args(["--dsn", pg_dsn, "--runs", "2500", "--raw-seconds", "0.2", "--explain"])
    results = bench.run_benchmark(args, log=lambda _msg: None)
    print(bench.report(results, args))

    prune = results["prune"]
    assert results["raw_1"] > 0
    assert prune["deleted"] + prune["skipped_then_next_pass"] == prune["counted"] == 2500
    assert prune["batches"] >= 4 and prune["largest_batch"] <= 1000  # 2,500 runs, parents after children
    assert 0 < prune["batch_p50"] <= prune["batch_max"] and prune["runs_per_s"] > 0
    assert results["left"] == {"runs": 375, "kept": 375, "doomed_rows_left": 0}
    out = capsys.readouterr().out
    assert "batch transaction p50 / p95 / longest" in out and "one batch, EXPLAIN" in out
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)",
            ([results["schema"], results["raw_schema"]],),
        ).fetchone()
    assert left == (0,)
