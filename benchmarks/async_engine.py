"""pgflow asyncio benchmark (SPEC §17): AsyncEngine and AsyncClient beside Engine and raw PostgreSQL.

Run against ONE PostgreSQL in one process run::

    python benchmarks/async_engine.py [--dsn DSN] [--sleepers 1000] [--waiters 200] [--runs 1000] ...

(a) the raw single-connection INSERT+COMMIT rate (the durable-write limit of one connection);
(b) 1,000 runs each awaiting one 1-s ``asyncio.sleep`` step on one ``AsyncEngine(concurrency=1000)``:
    wall time until the last completes, runs enqueued first (b1) and started while it runs (b2), and
    the most threads the process had meanwhile;
(c) 200 concurrent ``wait_for_run`` calls on one ``AsyncClient``, and ``get_run`` latency on that
    client while they wait (beside the same without waiters);
(d) throughput of runs × steps (10 × 10 by default... ``--runs``/``--steps``) on ``AsyncEngine`` and on
    ``Engine``, enqueued first, timed to the last ``completed_at``.

DSN: ``--dsn``, else ``PGFLOW_DATABASE_URL``, else an embedded server in a temp dir. Fresh schemas,
dropped at the end; the server's own durability settings. Every figure printed is measured here.
(The file is not called ``asyncio.py``: a script's directory comes first on ``sys.path``, and it
would shadow the standard library's ``asyncio``.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import pgflow
from pgflow import Run, WaitFor, workflow

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as sync_bench  # the engine benchmark's helpers: raw rate, database, percentiles


async def nap(seconds: float) -> bool:
    await asyncio.sleep(seconds)
    return True


@workflow("bench-nap")
def nap_flow(ctx: pgflow.Context[Any]):
    return (yield Run("nap", nap, ctx.input["seconds"]))


@workflow("bench-gate")
def gate_flow(ctx: pgflow.Context[Any]):
    return (yield WaitFor("gate", event="open"))


async def async_work(i: int) -> int:
    return i + 1


@workflow("bench-async-steps")
def async_steps_flow(ctx: pgflow.Context[Any]):
    total = 0
    for i in range(ctx.input["steps"]):
        total = yield Run(f"step-{i}", async_work, total)
    return total


class ThreadPeak:
    """The most threads the process had while it watched (sampled every 10 ms)."""

    def __init__(self) -> None:
        self.peak = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, threading.active_count())

    def __enter__(self) -> ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak -= 1  # the watcher itself


async def _register(dsn: str, schema: str, flow: pgflow.Workflow[Any, Any]) -> None:
    """Register ``flow`` (and migrate the schema) with an engine that serves nothing, then close it."""
    registrar = pgflow.AsyncEngine(dsn, workflows=[flow], schema=schema)
    await registrar.start(worker=False)
    await registrar.stop()


async def _count_completed(client: pgflow.AsyncClient, workflow_id: str) -> int:
    return (await client.count_runs(workflow_id=workflow_id))["completed"]


async def _until_completed(client: pgflow.AsyncClient, workflow_id: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await _count_completed(client, workflow_id) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workflow_id}: runs still unfinished after {timeout:g}s")
        await asyncio.sleep(0.01)


def _last_completed(dsn: str, schema: str, workflow_id: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("SELECT extract(epoch FROM max(completed_at)) FROM {} WHERE workflow_id = %s").format(
                sql.Identifier(schema, "runs")
            ),
            (workflow_id,),
        ).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


# -- (b) sleepers ------------------------------------------------------------------------------------------


async def sleepers(dsn: str, n: int, seconds: float, concurrency: int) -> dict[str, Any]:
    schema = f"bench_async_{uuid.uuid4().hex[:10]}"
    result: dict[str, Any] = {"schema": schema, "runs": n, "sleep_s": seconds, "concurrency": concurrency}
    async with pgflow.AsyncClient(dsn, schema=schema) as client:
        # (b1) enqueued first: the engine's own time from start to the last completion
        await _register(dsn, schema, nap_flow)
        await asyncio.gather(*(client.start_workflow(nap_flow.id, {"seconds": seconds}) for _ in range(n)))
        with ThreadPeak() as threads:
            wall0 = time.time()
            async with pgflow.AsyncEngine(dsn, workflows=[nap_flow], schema=schema, concurrency=concurrency):
                await _until_completed(client, nap_flow.id, n, 60 + seconds)
            result["enqueued_first_s"] = _last_completed(dsn, schema, nap_flow.id) - wall0
        result["enqueued_first_threads"] = threads.peak
        # (b2) started while the engine runs: from the first start_workflow to the last completion
        async with pgflow.AsyncEngine(
            dsn, workflows=[nap_flow], schema=schema, concurrency=concurrency
        ) as eng:
            with ThreadPeak() as threads:
                wall0 = time.time()
                await asyncio.gather(*(eng.start_workflow(nap_flow, {"seconds": seconds}) for _ in range(n)))
                result["started_in_s"] = time.time() - wall0
                await _until_completed(client, nap_flow.id, 2 * n, 60 + seconds)
                result["started_live_s"] = _last_completed(dsn, schema, nap_flow.id) - wall0
        result["started_live_threads"] = threads.peak
    return result


# -- (c) waiters -----------------------------------------------------------------------------------------


async def _get_run_latencies(client: pgflow.AsyncClient, run_id: str, samples: int) -> list[float]:
    found = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await client.get_run(run_id)
        found.append(time.perf_counter() - t0)
        await asyncio.sleep(0.002)
    return found


async def waiters(dsn: str, n: int, samples: int) -> dict[str, Any]:
    schema = f"bench_async_{uuid.uuid4().hex[:10]}"
    result: dict[str, Any] = {"schema": schema, "waiters": n, "samples": samples}
    async with (
        pgflow.AsyncEngine(dsn, workflows=[gate_flow], schema=schema) as eng,
        pgflow.AsyncClient(dsn, schema=schema) as client,
    ):
        runs = await asyncio.gather(*(client.start_workflow(gate_flow.id) for _ in range(n)))
        for r in runs:
            await client.wait_for_run(r.id, until=["paused"], timeout="30s")
        quiet = await _get_run_latencies(client, runs[0].id, samples)
        threads = threading.active_count()
        pending = [asyncio.ensure_future(client.wait_for_run(r.id, timeout="120s")) for r in runs]
        await asyncio.sleep(0.2)  # every waiter registered and parked
        busy = await _get_run_latencies(client, runs[0].id, samples)
        result["threads_added_by_waiters"] = threading.active_count() - threads
        t0 = time.perf_counter()
        await asyncio.gather(*(eng.trigger_event(r.id, "open", {}) for r in runs))
        done = await asyncio.gather(*pending)
        result["release_all_s"] = time.perf_counter() - t0
        if {d.status.value for d in done} != {"completed"}:
            raise RuntimeError("a waiter returned a run that is not completed")
    result.update(
        quiet_p50=sync_bench.pct(quiet, 50), quiet_p95=sync_bench.pct(quiet, 95),
        busy_p50=sync_bench.pct(busy, 50), busy_p95=sync_bench.pct(busy, 95),
    )  # fmt: skip
    return result


# -- (d) throughput ---------------------------------------------------------------------------------------


async def async_throughput(dsn: str, runs: int, steps: int, concurrency: int) -> dict[str, Any]:
    schema = f"bench_async_{uuid.uuid4().hex[:10]}"
    async with pgflow.AsyncClient(dsn, schema=schema) as client:
        await _register(dsn, schema, async_steps_flow)
        for _ in range(runs):
            await client.start_workflow(async_steps_flow.id, {"steps": steps})
        wall0 = time.time()
        async with pgflow.AsyncEngine(
            dsn, workflows=[async_steps_flow], schema=schema, concurrency=concurrency
        ):
            await _until_completed(client, async_steps_flow.id, runs, 60 + runs * steps / 50)
        elapsed = _last_completed(dsn, schema, async_steps_flow.id) - wall0
    return {"schema": schema, "runs": runs, "steps": steps, "seconds": elapsed,
            "steps_per_s": runs * steps / elapsed}  # fmt: skip


# -- the run -----------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with sync_bench.database(args.dsn) as (dsn, where):
        schemas: list[str] = []
        try:
            results["server"] = {"source": where, **sync_bench.server_settings(dsn)}
            raw = f"bench_raw_{uuid.uuid4().hex[:8]}"
            schemas.append(raw)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(raw)))
                conn.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, payload text)").format(
                    sql.Identifier(raw, "raw_writes")))  # fmt: skip
            log("(a) raw INSERT+COMMIT, one connection ...")
            results["raw_1"], _ = sync_bench.raw_insert_rate(dsn, raw, 1, args.raw_seconds)
            log(f"(b) {args.sleepers} runs x one {args.sleep:g}-s asyncio.sleep step ...")
            results["sleepers"] = asyncio.run(sleepers(dsn, args.sleepers, args.sleep, args.sleepers))
            schemas.append(results["sleepers"]["schema"])
            log(f"(c) {args.waiters} concurrent wait_for_run on one AsyncClient ...")
            results["waiters"] = asyncio.run(waiters(dsn, args.waiters, args.samples))
            schemas.append(results["waiters"]["schema"])
            log(f"(d) {args.runs} x {args.steps} steps: AsyncEngine, then Engine ...")
            results["async_throughput"] = asyncio.run(
                async_throughput(dsn, args.runs, args.steps, args.concurrency)
            )
            schemas.append(results["async_throughput"]["schema"])
            results["sync_throughput"] = sync_bench.throughput(dsn, args.runs, args.steps, args.concurrency)
            schemas.append(results["sync_throughput"]["schema"])
        finally:
            sync_bench.drop_schemas(dsn, schemas)
    return results


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    raw = r["raw_1"]
    s, w, a, t = r["sleepers"], r["waiters"], r["async_throughput"], r["sync_throughput"]
    ms = sync_bench.ms
    lines = [
        f"server: {r['server']['server_version']} ({r['server']['source']}), fsync={r['server']['fsync']}, "
        f"synchronous_commit={r['server']['synchronous_commit']}",
        f"(a) raw INSERT+COMMIT, 1 connection: {raw:,.0f}/s",
        f"(b) {s['runs']} runs x one {s['sleep_s']:g}-s async step, AsyncEngine(concurrency={s['concurrency']}):",
        f"    enqueued first: last completion {s['enqueued_first_s']:.2f} s after the engine started "
        f"(target <= 3 s), at most {s['enqueued_first_threads']} threads (target < 50)",
        f"    started live:   {s['started_in_s']:.2f} s to start them, last completion {s['started_live_s']:.2f} s "
        f"after the first start, at most {s['started_live_threads']} threads",
        f"(c) {w['waiters']} concurrent wait_for_run on one AsyncClient: get_run p50 {ms(w['busy_p50'])} "
        f"p95 {ms(w['busy_p95'])} (quiet: p50 {ms(w['quiet_p50'])} p95 {ms(w['quiet_p95'])}; target p50 < 10 ms); "
        f"threads added by the waiters: {w['threads_added_by_waiters']}; all released in {w['release_all_s']:.2f} s",
        f"(d) {a['runs']} runs x {a['steps']} steps, enqueued first, concurrency {args.concurrency}:",
        f"    AsyncEngine: {a['steps_per_s']:,.0f} steps/s = {a['steps_per_s'] / raw:.2f} x raw",
        f"    Engine:      {t['steps_per_s']:,.0f} steps/s = {t['steps_per_s'] / raw:.2f} x raw",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="PostgreSQL DSN (default: PGFLOW_DATABASE_URL, else an embedded server)")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="duration of the raw INSERT test (3)")
    p.add_argument(
        "--sleepers", type=int, default=1000, help="runs of (b), and the engine's concurrency (1000)"
    )
    p.add_argument("--sleep", type=float, default=1.0, help="seconds each (b) step sleeps (1)")
    p.add_argument("--waiters", type=int, default=200, help="concurrent wait_for_run calls of (c) (200)")
    p.add_argument("--samples", type=int, default=200, help="get_run calls timed in (c) (200)")
    p.add_argument("--runs", type=int, default=1000, help="runs of (d) (1000)")
    p.add_argument("--steps", type=int, default=10, help="steps per run of (d) (10)")
    p.add_argument("--concurrency", type=int, default=10, help="concurrency of both engines in (d) (10)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE ('-': stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return sync_bench.run_cli(argv, parse_args, run_benchmark, report)


if __name__ == "__main__":
    sys.exit(main())
