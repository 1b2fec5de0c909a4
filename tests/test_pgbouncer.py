"""pgflow through a real transaction-pooling PgBouncer, configured by the recipe in docs/operations.md
(SPEC §13 "PgBouncer"): ``prepare=False`` and ``listen_dsn=`` make it work at full speed; without
``listen_dsn`` it still works, polling every second, and one warning says so."""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

import pgbouncer_support
import pgflow
from pgflow import Run, Transaction, WaitFor, workflow
from pgflow.postgres import PostgresStore, listen

pytestmark = [pytest.mark.postgres, pytest.mark.process, pytest.mark.slow]

RUNS = 200  # started at once from several threads: the old failure was duplicate prepared statements
THREADS = 8
LATENCY_SAMPLES = 50


def _stamp() -> float:
    return time.time()


def _in_transaction(conn: psycopg.Connection[Any], n: int) -> int:
    """A ``Transaction`` step: runs inside the transaction that records it."""
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    row = conn.execute("SELECT %s::int + 1", (n,)).fetchone()
    assert row is not None
    return int(row[0])


@workflow("pgbouncer-hops")
def hops(ctx: pgflow.Context[Any]) -> Any:
    first = yield Run("first", _stamp)
    second = yield Run("second", _stamp)
    yield WaitFor("go", event="go")
    after = yield Run("after", _stamp)  # its time minus the trigger_event's: event -> next step
    counted = yield Transaction("count", _in_transaction, ctx.input["n"])
    return {"first": first, "second": second, "after": after, "counted": counted}


@pytest.fixture
def bouncer(pg_dsn: str) -> Iterator[pgbouncer_support.Bouncer]:
    """PgBouncer in transaction mode on 127.0.0.1, in front of the test's PostgreSQL."""
    if pgbouncer_support.binary() is None:
        pytest.skip("the pgbouncer binary is not installed (apt-get install pgbouncer; .ci/run does)")
    with pgbouncer_support.running(pg_dsn) as running:
        yield running


@pytest.fixture
def listen_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Callable[[], list[str]]:
    """The warnings the ``pgflow.listen`` logger gave so far in the test (its once-per-process
    memory of databases already warned about is reset first)."""
    monkeypatch.setattr(listen, "_warned", set())
    caplog.set_level(logging.WARNING, logger="pgflow.listen")

    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.get_records("call")
            if r.name == "pgflow.listen" and r.levelno >= logging.WARNING
        ]  # fmt: skip

    return warnings


def _start_many(client: pgflow.Client, count: int) -> list[pgflow.WorkflowRun]:
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda i: client.start_workflow(hops, {"n": i}), range(count)))


def _hop(client: pgflow.Client, run_id: str) -> float:
    """Seconds from the ``go`` event to the step after the ``WaitFor`` (the run must be waiting)."""
    sent = time.time()
    client.trigger_event(run_id, "go")
    done = client.wait_for_run(run_id, timeout="30s")
    assert done.status == "completed", done
    return float(done.output["after"]) - sent


def _just_after_an_idle_poll(polled: threading.Event) -> None:
    """Return shortly after a claim that came at least 0.5 s after the one before: the dispatcher of
    an idle worker polling (not a busy worker looking for its next run), now asleep until its next poll."""
    last = None
    for _ in range(20):
        polled.clear()
        assert polled.wait(5), "the worker did not poll"
        now = time.monotonic()
        if last is not None and now - last >= 0.5:
            # let the dispatcher finish that poll (it asks when work is next due, then sleeps):
            # an event sent before it asks would be due at once, and claimed without waiting
            time.sleep(0.2)
            return
        last = now
    raise AssertionError("the worker never settled into its idle poll")


def test_transaction_pooling_with_prepare_off_and_a_direct_listen_dsn(
    bouncer: pgbouncer_support.Bouncer, pg_schema: str, listen_warnings: Callable[[], list[str]]
) -> None:
    """prepare=False + listen_dsn=: 200 concurrent runs complete, no warning, event -> step p50 < 50 ms."""
    options: dict[str, Any] = {"schema": pg_schema, "prepare": False, "listen_dsn": bouncer.direct_dsn}
    with (
        pgflow.Engine(bouncer.dsn, workflows=[hops], concurrency=8, **options) as engine,
        pgflow.Client(bouncer.dsn, **options) as client,
    ):
        runs = _start_many(client, RUNS)
        assert len({r.id for r in runs}) == RUNS
        for run in runs:
            waiting = client.wait_for_run(run.id, until="paused", timeout="60s")
            assert waiting.waiting is not None and waiting.waiting.event == "go", waiting

        # one hop at a time on an idle worker: the wake-up latency itself
        latencies = sorted(_hop(client, run.id) for run in runs[:LATENCY_SAMPLES])
        p50 = statistics.median(latencies)
        p95 = latencies[int(0.95 * len(latencies)) - 1]
        print(f"\nPgBouncer (transaction), listen_dsn: event -> next step p50 {p50 * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")  # fmt: skip

        # the rest at once, from several threads
        rest = runs[LATENCY_SAMPLES:]
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda r: client.trigger_event(r.id, "go"), rest))
        for run in rest:
            done = engine.wait_for_run(run.id, timeout="60s")
            assert done.status == "completed" and done.output["after"] >= done.output["second"], done
            assert done.output["counted"] == done.input["n"] + 1, done
        assert client.count_runs(workflow_id="pgbouncer-hops")["completed"] == RUNS
        assert asyncio.run(_async_round_trip(bouncer, options)) < 0.5  # AsyncClient takes them too

    assert p50 < 0.05, latencies
    assert listen_warnings() == []
    troubles = [line for line in bouncer.log().splitlines() if " WARNING " in line or " ERROR " in line]
    assert troubles == [], troubles


async def _async_round_trip(bouncer: pgbouncer_support.Bouncer, options: dict[str, Any]) -> float:
    """A run started, woken and awaited with an ``AsyncClient``; the seconds of its event hop."""
    async with pgflow.AsyncClient(bouncer.dsn, **options) as client:
        run = await client.start_workflow(hops, {"n": -1})
        await client.wait_for_run(run.id, until="paused", timeout="30s")
        sent = time.time()
        await client.trigger_event(run.id, "go")
        done = await client.wait_for_run(run.id, timeout="30s")
        assert done.status == "completed", done
        return float(done.output["after"]) - sent


def test_without_listen_dsn_runs_complete_by_polling_and_one_warning_says_so(
    bouncer: pgbouncer_support.Bouncer, pg_schema: str, listen_warnings: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Without listen_dsn: runs complete, each hop waits for the 1 s poll, ONE warning says why."""
    polled = threading.Event()  # set after each claim: the worker's poll tick
    claim = PostgresStore.claim

    def observed_claim(self: PostgresStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return claim(self, *args, **kwargs)
        finally:
            polled.set()

    monkeypatch.setattr(PostgresStore, "claim", observed_claim)
    with (
        pgflow.Engine(
            bouncer.dsn, workflows=[hops], concurrency=2, schema=pg_schema, prepare=False
        ) as engine,
        pgflow.Client(bouncer.dsn, schema=pg_schema, prepare=False) as client,
    ):
        runs = _start_many(client, 3)
        for run in runs:
            waiting = client.wait_for_run(run.id, until="paused", timeout="30s")
            assert waiting.waiting is not None and waiting.waiting.event == "go", waiting

        latencies = []
        for run in runs[:2]:
            _just_after_an_idle_poll(polled)
            latencies.append(_hop(client, run.id))  # picked up at the next poll, about 1 s later
        print(f"\nPgBouncer (transaction), no listen_dsn: event -> next step "
              f"{', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")  # fmt: skip
        client.trigger_event(runs[2].id, "go")
        assert engine.wait_for_run(runs[2].id, timeout="30s").status == "completed"
        assert engine.count_runs(workflow_id="pgbouncer-hops")["completed"] == 3

    assert all(0.3 <= x <= 2.5 for x in latencies), latencies
    found = listen_warnings()
    assert len(found) == 1, found
    assert "LISTEN/NOTIFY does not reach" in found[0] and "listen_dsn" in found[0], found


def test_prepared_statements_fail_through_transaction_pooling(
    bouncer: pgbouncer_support.Bouncer, pg_schema: str
) -> None:
    """Why prepare=False: with prepared statements, concurrent starts through transaction pooling fail."""
    # another client's connection prepared "_pg3_0" on the same server connection: "already exists",
    # "does not exist", or worse, the other statement runs and returns rows of the wrong shape
    failures: list[str] = []

    def start(client: pgflow.Client, i: int) -> None:
        try:
            client.start_workflow("pgbouncer-hops", {"n": i})
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    direct = bouncer.direct_dsn
    producer = pgflow.Engine(
        bouncer.dsn, workflows=[hops], schema=pg_schema, prepare=False, listen_dsn=direct
    )
    producer.start(worker=False).stop()  # migrated and registered through PgBouncer, prepare-free
    with (
        pgflow.Client(bouncer.dsn, schema=pg_schema, listen_dsn=direct) as client,
        ThreadPoolExecutor(THREADS) as pool,
    ):
        list(pool.map(lambda i: start(client, i), range(RUNS)))
    print(f"\nPgBouncer (transaction), prepare=True: {len(failures)} of {RUNS} starts failed")
    assert any("prepared statement" in f for f in failures), failures[:5]
