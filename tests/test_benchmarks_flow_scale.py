"""Smoke test of ``benchmarks/flow_scale.py`` at a few thousand runs: every figure is measured and
reported, the claim statements read runs through indexes, and the runs the fill writes are runs the
engine continues (no timing assertions)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgflow
from benchmark_support import load_benchmark

pytestmark = pytest.mark.postgres


def load() -> ModuleType:
    return load_benchmark("flow_scale")


def test_flow_scale_benchmark_runs_at_a_few_thousand_runs(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fill, EXPLAIN, claims, throughput and raw INSERT on one server; the report has every row; the
    claim statements (plain and limited) use indexes on the filled schema; the schemas are dropped."""
    bench = load()
    args = bench.parse_args(
        ["--dsn", pg_dsn, "--runs", "4000", "--claims", "20", "--throughput-runs", "5", "--steps", "3",
         "--concurrency", "2", "--raw-seconds", "0.2", "--backlog", "30"]
    )  # fmt: skip
    results = bench.run_benchmark(args, log=lambda _msg: None)
    print(bench.report(results, args))

    assert results["fill"]["states"] == {
        "completed": 1000, "event": 1000, "timer": 1000, "parked": 990, "holding a place": 10,
    }  # fmt: skip
    assert results["fill"]["rows"] == {"steps": 4 * 1000 + 2 * 1000 + 3 * 1000 + 2 * 10, "events": 2000}
    for variant in ("plain", "limited"):
        for label in ("empty", "big"):
            figures = results["claims"][variant][label]
            assert figures["calls"] == 20 and 0 < figures["p50"] <= figures["p99"]
    assert len(results["rounds"]) == 2
    for found in results["rounds"]:
        assert found["raw"] > 0
        assert found["empty"]["steps_per_s"] > 0 and found["big"]["steps_per_s"] > 0

    big = results["explain"]["big"]
    assert set(big) >= {*bench.CLAIM_STATEMENTS, "park_runs", "unpark", "next_due"}
    for name in (*bench.CLAIM_STATEMENTS, "park_runs"):
        assert big[name]["custom"]["seq_scans"] == [], (name, big[name]["custom"])
    assert "runs_ready_idx" in big["claim"]["custom"]["indexes"]
    assert "runs_lease_idx" in big["claim"]["custom"]["indexes"]
    assert {"runs_ready_idx", "runs_claim_idx"} & set(big["ready_candidates"]["custom"]["indexes"])

    for label in ("empty", "big"):
        after = results["after"][label]
        assert after["dead"] >= 0 and set(after["explain"]) == {"claim", "next_due"}

    out = capsys.readouterr().out
    for row in ("(a) raw INSERT+COMMIT", "(b) claim of 10, p50", "(c) limited claim of 10, p50",
                "(d) 3-step throughput", "(d) steps/s vs raw 1 connection", "(e) EXPLAIN claim (custom plan)",
                "(e) EXPLAIN ready_candidates (custom plan)", "(e) EXPLAIN claim_ids (custom plan)",
                "(f) EXPLAIN claim", "(f) EXPLAIN next_due"):  # fmt: skip
        assert row in out, row
    assert "(e) EXPLAIN claim (custom plan)" in out and "Seq Scan on runs; " not in _row(out, "claim (custom")

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s)", (list(results["schemas"].values()),)
        ).fetchone()
    assert left == (0,)


def _row(report: str, label: str) -> str:
    return next(line for line in report.splitlines() if label in line)


def test_the_filled_runs_are_runs_the_engine_continues(pg_dsn: str, pg_schema: str) -> None:
    """The fill writes each state as the engine would have: an event-waiting run takes its event and
    goes on to its timer, a timer-waiting run fast-forwarded completes, and a run holding one of the
    limited workflow's places ends and wakes a parked run, which takes the place."""
    bench = load()
    bench.create(pg_dsn, pg_schema)
    assert bench.fill(pg_dsn, pg_schema, 400)["states"] == {
        "completed": 100, "event": 100, "timer": 100, "parked": 90, "holding a place": 10,
    }  # fmt: skip
    runs = sql.Identifier(pg_schema, "runs")

    def one(where: str) -> str:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            row = conn.execute(
                sql.SQL("SELECT id FROM {} WHERE " + where + " ORDER BY id LIMIT 1").format(runs)
            )
            found = row.fetchone()
        assert found is not None, where
        return str(found[0])

    def states() -> dict[str, int]:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            return dict(
                conn.execute(sql.SQL(bench.STATES).format(schema=sql.Identifier(pg_schema))).fetchall()
            )

    event, timer, holder = (
        one("waiting_kind = 'wait_for' AND NOT slot_held"),
        one("waiting_kind = 'delay'"),
        one("slot_held"),
    )
    workflows = [bench.steps_flow, bench.order_flow, bench.limited_flow]
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=workflows, concurrency=4) as engine:
        assert engine.get_run(event).waiting is not None and engine.get_run(event).waiting.kind == "wait_for"
        engine.trigger_event(event, "paid", {"amount": 42})
        run = _until(
            lambda: engine.get_run(event), lambda r: r.waiting is not None and r.waiting.kind == "delay"
        )
        assert run.status == "paused" and run.timeline["payment"].output == {"amount": 42}

        engine.fast_forward_workflow(timer)
        done = engine.wait_for_run(timer, timeout="20s")
        assert done.status == "completed" and done.output == {"shipped": True}, done

        engine.trigger_event(holder, "approved")
        assert engine.wait_for_run(holder, timeout="20s").status == "completed"
        _until(states, lambda s: s.get("parked") == 89 and s.get("holding a place") == 10)


def _until(read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.05)
