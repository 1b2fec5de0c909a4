"""Retention through the public API (SPEC §15): ``prune`` on every client, ``Engine(retention=)``.

Simulated time throughout: a ``Harness`` (in memory, or on PostgreSQL with ``dsn=``) or an engine
driven by a ``SimClock``, so "30 days later" takes no time. The store rules themselves are pinned on
every store by ``test_store_prune.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow import Child, Run, WaitFor, workflow
from pgflow import operations as operations_module
from pgflow import retention as retention_module
from pgflow.errors import InvalidArgumentError, InvalidDurationError, RunNotFoundError
from pgflow.postgres.ops import retention_lock_key
from pgflow.testing import AsyncHarness, Harness, SimClock


def _one(n: int) -> int:
    return n + 1


@workflow("ret-quick")
def quick(ctx: pgflow.Context[Any]) -> Any:
    return (yield Run("one", _one, 1))


@workflow("ret-kid")
def kid(ctx: pgflow.Context[Any]) -> Any:
    return (yield Run("one", _one, 2))


@workflow("ret-evented")
def evented(ctx: pgflow.Context[Any]) -> Any:
    return (yield WaitFor("go", event="go"))


@workflow("ret-parent")
def parent(ctx: pgflow.Context[Any]) -> Any:
    got = yield Child("kid", kid)
    yield WaitFor("go", event="go")
    return got


def exists(client: Any, run_id: str) -> bool:
    try:
        client.get_run(run_id)
    except RunNotFoundError:
        return False
    return True


def spy_batches(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | None]]:
    """Record each ``prune_runs`` call of ``store``: (limit, runs deleted) — one transaction each."""
    calls: list[tuple[int, int | None]] = []
    original = store.prune_runs

    def recorded(query: Any, limit: int, exclusive: bool) -> int | None:
        deleted: int | None = original(query, limit, exclusive)
        calls.append((limit, deleted))
        return deleted

    monkeypatch.setattr(store, "prune_runs", recorded)
    return calls


# -- arguments -------------------------------------------------------------------------------------------


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"older_than": 0}, InvalidDurationError, "older_than"),
    ({"older_than": -5}, InvalidDurationError, "older_than"),
    ({"older_than": "-30d"}, InvalidDurationError, "older_than"),
    ({"older_than": "soon"}, InvalidDurationError, "older_than"),
    ({"older_than": None}, InvalidDurationError, "older_than"),
    ({"older_than": "1d", "statuses": "running"}, InvalidArgumentError, "terminal"),
    ({"older_than": "1d", "statuses": ["completed", "paused"]}, InvalidArgumentError, "'paused'"),
    ({"older_than": "1d", "statuses": []}, InvalidArgumentError, "none given"),
    ({"older_than": "1d", "statuses": ["done"]}, InvalidArgumentError, "statuses"),
    ({"older_than": "1d", "statuses": 5}, InvalidArgumentError, "statuses"),
    ({"older_than": "1d", "workflow_id": ""}, InvalidArgumentError, "workflow_id"),
    ({"older_than": "1d", "workflow_id": "w" * 300}, InvalidArgumentError, "workflow_id"),
    ({"older_than": "1d", "resource_id": 7}, InvalidArgumentError, "resource_id"),
    ({"older_than": "1d", "dry_run": "yes"}, InvalidArgumentError, "dry_run"),
]


def test_bad_arguments_are_named_errors_and_delete_nothing() -> None:
    """Every bad argument raises the named error, naming it, before anything is deleted."""
    with Harness([quick]) as h:
        run = h.start_workflow(quick)
        h.run_until_complete(run.id)
        h.advance("400d")
        for kwargs, error, text in BAD:
            with pytest.raises(error, match=text):
                h.prune(**kwargs)
            assert exists(h, run.id), kwargs
        assert h.prune(older_than="100000 weeks") == 0  # reaches before year 1: nothing ended then
        assert h.prune(older_than="1d", statuses=pgflow.RunStatus.COMPLETED) == 1


def test_prune_on_the_harness_in_simulated_time() -> None:
    """Runs that ended more than ``older_than`` ago by the client's clock go; younger and live ones
    stay; ``dry_run`` counts the same runs without deleting them."""
    with Harness([quick, parent, kid]) as h:
        done = [h.start_workflow(quick) for _ in range(3)]
        waiting = h.start_workflow(parent)
        h.run_until_idle()
        h.advance("20d")
        young = h.start_workflow(quick)
        h.run_until_idle()
        h.advance("15d")  # the first three ended 35 days ago, the young one 15 days ago
        assert h.prune(older_than="30d", dry_run=True) == 3
        assert all(exists(h, r.id) for r in done)
        assert h.prune(older_than="30d") == 3
        assert not any(exists(h, r.id) for r in done)
        assert exists(h, young.id) and exists(h, waiting.id)  # the waiting parent and its ended child
        assert len(h.get_child_runs(waiting.id)) == 1
        assert h.prune(older_than="30d") == 0


def test_the_async_harness_prunes_too() -> None:
    async def scenario() -> None:
        async with AsyncHarness([quick]) as h:
            run = await h.start_workflow(quick)
            await h.run_until_complete(run.id)
            await h.advance("2d")
            assert await h.prune(older_than="1d", dry_run=True) == 1
            assert await h.prune(older_than="1d", statuses=["failed"]) == 0
            assert await h.prune(older_than="1d") == 1
            with pytest.raises(InvalidDurationError):
                await h.prune(older_than=0)

    asyncio.run(scenario())


# -- on PostgreSQL, simulated clock ------------------------------------------------------------------------


@pytest.mark.postgres
def test_prune_on_postgres_deletes_in_batches(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is one store call (one transaction) of at most PRUNE_BATCH runs (1,000), until one
    deletes nothing; steps and events go with their runs."""
    with Harness([evented], dsn=pg_dsn, schema=pg_schema) as h:
        runs = [h.start_workflow(evented) for _ in range(25)]
        h.run_until_idle()
        for r in runs:
            h.trigger_event(r.id, "unused", {"n": 1})  # stays in the mailbox: deleted with its run
            h.trigger_event(r.id, "go", {"n": 2})
        h.run_until_idle()
        assert {r.status for r in h.get_runs(limit=100).items} == {"completed"}
        h.advance("31d")
        calls = spy_batches(h.store, monkeypatch)
        assert h.prune(older_than="30d", statuses=["failed"]) == 0 and calls == [(1000, 0)]
        monkeypatch.setattr(operations_module, "PRUNE_BATCH", 10)
        calls.clear()
        assert h.prune(older_than="30d") == 25
        assert calls == [(10, 10), (10, 10), (10, 5), (10, 0)]
        assert not any(exists(h, r.id) for r in runs)
    with psycopg.connect(pg_dsn) as conn:
        left = [
            conn.execute(f'SELECT count(*) FROM "{pg_schema}".{t}').fetchone() for t in ("steps", "events")
        ]
    assert left == [(0,), (0,)]


@pytest.mark.postgres
def test_prune_on_postgres_never_takes_live_runs_or_a_live_parents_child(pg_dsn: str, pg_schema: str) -> None:
    """A waiting parent and its ended child stay however old; once the parent has ended, the child
    can go (the parent's Child record keeps its output), the parent when it is old enough."""
    with Harness([parent, kid, quick], dsn=pg_dsn, schema=pg_schema) as h:
        p = h.start_workflow(parent)
        ended = h.start_workflow(quick)
        h.run_until_idle()  # the parent waits for "go" with its child completed; `ended` ran
        h.pause_workflow(h.start_workflow(quick).id)  # held before it ran: live
        (child,) = h.get_child_runs(p.id)
        assert child.status == "completed" and h.get_run(p.id).status == "paused"
        h.advance("60d")
        assert h.prune(older_than="30d", dry_run=True) == 1
        assert h.prune(older_than="30d") == 1 and not exists(h, ended.id)
        assert exists(h, child.id) and exists(h, p.id)
        h.trigger_event(p.id, "go")
        h.run_until_complete(p.id)
        assert h.prune(older_than="30d") == 1  # the child, whose parent has ended (just now)
        assert not exists(h, child.id) and h.get_child_runs(p.id) == []
        assert h.get_run(p.id).timeline["kid"].output == 3  # the parent's record keeps its output
        h.advance("31d")
        assert h.prune(older_than="30d") == 1 and not exists(h, p.id)
        assert [r.status for r in h.get_runs().items] == ["paused"]


@pytest.mark.postgres
def test_async_client_prunes_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    """AsyncClient.prune: the same batches, awaited; its clock decides what is old."""
    with Harness([quick], dsn=pg_dsn, schema=pg_schema) as h:
        run = h.start_workflow(quick)
        h.run_until_complete(run.id)
    later = SimClock(run.created_at.add(days=2))

    async def scenario() -> None:
        async with pgflow.AsyncClient(pg_dsn, schema=pg_schema, clock=later) as client:
            assert await client.prune(older_than="3d") == 0
            assert await client.prune(older_than="1d", resource_id="nobody") == 0
            assert await client.prune(older_than="1d", dry_run=True) == 1
            assert await client.prune(older_than="1d") == 1
            with pytest.raises(RunNotFoundError):
                await client.get_run(run.id)

    asyncio.run(scenario())


# -- Engine(retention=) ------------------------------------------------------------------------------------


def test_retention_is_checked_at_construction() -> None:
    """A bad ``retention`` is an InvalidDurationError naming it when the engine is built."""
    for bad in (0, -1, "never", "0s", [30]):
        with pytest.raises(InvalidDurationError, match="retention"):
            pgflow.Engine(retention=bad)
        with pytest.raises(InvalidDurationError, match="retention"):
            pgflow.AsyncEngine(retention=bad)
    assert pgflow.Engine(retention="30d").retention == pgflow.parse_duration("30d")
    assert pgflow.Engine().retention is None and pgflow.AsyncEngine(retention=None).retention is None


def test_pass_delays_first_soon_then_about_hourly() -> None:
    """The first pass within FIRST_PASS seconds of start, then every interval ± 10 %."""
    delays = retention_module.pass_delays(3600.0)
    first = next(delays)
    later = [next(delays) for _ in range(200)]
    assert 0 <= first <= retention_module.FIRST_PASS
    assert all(3240 <= d <= 3960 for d in later) and len(set(later)) > 1
    assert next(retention_module.pass_delays(0.5)) <= 0.5


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fast_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines prune every 0.1 s instead of every hour."""
    monkeypatch.setattr(retention_module, "RETENTION_INTERVAL", 0.1)


@pytest.mark.postgres
def test_an_engine_with_retention_prunes_in_simulated_time(
    pg_dsn: str, pg_schema: str, fast_passes: None
) -> None:
    """Engine(retention="30d", clock=SimClock): its passes delete the runs that ended more than 30
    simulated days ago, and never the live ones."""
    clock = SimClock()
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[quick, parent, kid], clock=clock,
                       retention="30d", concurrency=4) as engine:  # fmt: skip
        done = [engine.start_workflow(quick) for _ in range(5)]
        waiting = engine.start_workflow(parent)
        for r in done:
            engine.wait_for_run(r.id, timeout="20s")
        engine.wait_for_run(waiting.id, until=["paused"], timeout="20s")
        assert eventually(lambda: len(engine._pruner.passes) >= 2)  # type: ignore[union-attr]
        assert all(exists(engine, r.id) for r in done)
        clock.advance("31d")
        assert eventually(lambda: not any(exists(engine, r.id) for r in done))
        assert exists(engine, waiting.id) and len(engine.get_child_runs(waiting.id)) == 1
        assert 5 in list(engine._pruner.passes)  # type: ignore[union-attr]


@pytest.mark.postgres
def test_one_engine_prunes_at_a_time(pg_dsn: str, pg_schema: str, fast_passes: None) -> None:
    """Passes run under the schema's retention advisory lock: while another session (another engine)
    holds it, every pass of two engines is skipped and nothing is deleted; released, one of them
    prunes the backlog, each run once."""
    with Harness([quick], dsn=pg_dsn, schema=pg_schema) as h:
        runs = [h.start_workflow(quick) for _ in range(30)]
        h.run_until_idle()
    later = SimClock(runs[0].created_at.add(days=31))
    engines = [pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[quick], clock=later, retention="30d")
               for _ in range(2)]  # fmt: skip
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (retention_lock_key(pg_schema),))
        for engine in engines:
            engine.start()
        try:
            pruners = [engine._pruner for engine in engines]
            assert eventually(lambda: all(p is not None and len(p.passes) >= 3 for p in pruners))
            assert {x for p in pruners for x in list(p.passes)} == {None}  # type: ignore[union-attr]
            assert all(exists(engines[0], r.id) for r in runs)
            other.execute("SELECT pg_advisory_unlock(%s)", (retention_lock_key(pg_schema),))
            assert eventually(lambda: not any(exists(engines[0], r.id) for r in runs))
            deleted = [x for p in pruners for x in list(p.passes) if x]  # type: ignore[union-attr]
            assert sum(deleted) == 30
        finally:
            for engine in engines:
                engine.stop()


@pytest.mark.postgres
def test_an_async_engine_with_retention_prunes(pg_dsn: str, pg_schema: str, fast_passes: None) -> None:
    """AsyncEngine(retention=): the same passes, as a task on the engine's loop."""
    with Harness([quick], dsn=pg_dsn, schema=pg_schema) as h:
        run = h.start_workflow(quick)
        h.run_until_complete(run.id)
    later = SimClock(run.created_at.add(days=8))

    async def scenario() -> None:
        async with pgflow.AsyncEngine(pg_dsn, schema=pg_schema, workflows=[quick], clock=later,
                                      retention="1w") as engine:  # fmt: skip
            pruner = engine._pruner
            assert pruner is not None
            for _ in range(300):  # a pass is recorded after its last batch (the one deleting none)
                if list(pruner.passes):
                    break
                await asyncio.sleep(0.05)
            assert list(pruner.passes)[:1] == [1]
            assert await engine.count_runs() == {s.value: 0 for s in pgflow.RunStatus}
        assert engine._pruner is None

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_failed_pass_is_logged_and_the_next_one_runs(
    pg_dsn: str,
    pg_schema: str,
    fast_passes: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass that fails (the database away) logs a warning; the engine keeps working and the next
    pass prunes. stop() ends the pruning thread."""
    failures = {"left": 2}
    original = retention_module.retention_pass

    def flaky(host: Any, older_than: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise pgflow.StorageError("the database is away")
        return (yield from original(host, older_than))

    monkeypatch.setattr(retention_module, "retention_pass", flaky)
    caplog.set_level(logging.INFO, "pgflow.retention")
    clock = SimClock()
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[quick], clock=clock, retention="1d") as engine:
        run = engine.start_workflow(quick)
        engine.wait_for_run(run.id, timeout="20s")
        clock.advance("2d")
        assert eventually(lambda: not exists(engine, run.id))
        thread = next(t for t in threading.enumerate() if t.name == "pgflow-retention")
    assert not thread.is_alive()
    messages = [r.getMessage() for r in caplog.records if r.name == "pgflow.retention"]
    assert sum("the database is away" in m for m in messages) == 2
    assert any("deleted 1 run(s)" in m for m in messages)


@pytest.mark.postgres
def test_no_pruning_without_retention_or_workers(pg_dsn: str, pg_schema: str) -> None:
    """Without ``retention``, or started with ``worker=False``, an engine never prunes."""
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[quick]) as engine:
        assert engine._pruner is None
    engine = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[quick], retention="1d").start(worker=False)
    try:
        assert engine._pruner is None
    finally:
        engine.stop()
