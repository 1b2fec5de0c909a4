"""asyncio all the way (SPEC §17): the native AsyncClient, AsyncEngine and AsyncHarness.

The sync and async faces are written once (the operation steps, the worker protocol, the harness
loops, the store operations); the first tests bind what is still spelled twice — the method lists and
signatures — so the two faces cannot drift apart. The rest drive the asyncio classes for real.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
import pytest

import pgflow
from pgflow import All, Child, Delay, Run, Transaction, WaitFor, workflow
from pgflow.async_operations import AsyncOperations
from pgflow.errors import InvalidArgumentError, RunNotFoundError, StepFailedError
from pgflow.operations import Operations
from pgflow.postgres import PostgresStore
from pgflow.postgres.async_store import AsyncPostgresStore
from pgflow.testing import AsyncHarness, Harness


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _public(cls: type) -> dict[str, Any]:
    return {name: member for name, member in inspect.getmembers(cls) if not name.startswith("_")}


def _shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds, defaults and the return annotation (a string under PEP 563, with
    ``Async`` dropped: ``AsyncEngine`` reads as ``Engine``, an async context manager as a context
    manager)."""
    sig = inspect.signature(fn)
    returns = str(sig.return_annotation).replace("Async", "")
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()] + [("return", returns, None)]


def _assert_twins(
    sync_cls: type, async_cls: type, *, only_sync: frozenset[str] = frozenset(),
    only_async: frozenset[str] = frozenset(), same_sync: frozenset[str] = frozenset(),
) -> None:  # fmt: skip
    sync_members, async_members = _public(sync_cls), _public(async_cls)
    assert set(sync_members) - only_sync == set(async_members) - only_async
    for name, member in sync_members.items():
        if name in only_sync or not callable(member) or isinstance(member, type):
            continue
        twin = async_members[name]
        assert _shape(member) == _shape(twin), name
        if name not in same_sync:
            assert inspect.iscoroutinefunction(twin), f"{async_cls.__name__}.{name} is not a coroutine"


# -- the twins, bound ---------------------------------------------------------------------------------


def test_async_operations_are_the_operations_as_coroutines() -> None:
    """Every client method exists on both faces with the same parameters; the async ones are coroutines."""
    _assert_twins(Operations, AsyncOperations)


def test_the_async_client_engine_and_harness_mirror_the_blocking_ones() -> None:
    _assert_twins(pgflow.Client, pgflow.AsyncClient)
    _assert_twins(Harness, AsyncHarness, same_sync=frozenset({"register", "crash_before", "crash_after"}))
    sync_engine = inspect.signature(pgflow.Engine)
    async_engine = inspect.signature(pgflow.AsyncEngine)
    assert list(sync_engine.parameters) == list(async_engine.parameters)
    assert async_engine.parameters["concurrency"].default == 100
    _assert_twins(
        pgflow.Engine, pgflow.AsyncEngine, only_async=frozenset({"close"}), same_sync=frozenset({"register"})
    )


def test_the_async_store_is_the_postgres_store_as_coroutines() -> None:
    """The two Postgres stores run the same operations (ops.py); their faces are bound here."""
    _assert_twins(PostgresStore, AsyncPostgresStore, same_sync=frozenset({"watch_run"}))


# -- AsyncHarness ----------------------------------------------------------------------------------------


async def _on_loop(tag: str) -> dict[str, Any]:
    return {"tag": tag, "loop": id(asyncio.get_running_loop())}


def _sync_step(n: int) -> int:
    return n * 2


@workflow("mixed")
def mixed(ctx: Any) -> Any:
    first = yield Run("async", _on_loop, "a")
    pair = yield All(Run("left", _on_loop, "l"), Run("right", _sync_step, 21))
    yield Delay("nap", "1h")
    got = yield WaitFor("go", event="go", timeout="1d")
    return {"loop": first["loop"], "left": pair[0]["loop"], "right": pair[1], "got": got}


def test_async_harness_runs_async_steps_on_the_tests_loop() -> None:
    """Async steps run on the caller's loop (not a helper thread's), sync ones beside them; simulated
    time and events behave as in Harness."""

    async def scenario() -> None:
        async with AsyncHarness([mixed]) as h:
            started = await h.start_workflow("mixed")
            await h.run_until_idle()
            assert (await h.get_run(started.id)).waiting.kind == "delay"
            await h.advance("1h")
            await h.trigger_event(started.id, "go", {"ok": True})
            done = await h.run_until_complete(started.id)
            here = id(asyncio.get_running_loop())
            assert done.output == {"loop": here, "left": here, "right": 42, "got": {"ok": True}}

    run(scenario())


def test_async_harness_crash_recovery_and_waiting_in_simulated_time() -> None:
    calls: list[str] = []

    async def charge(order: str) -> str:
        calls.append(order)
        return f"paid {order}"

    @workflow("pay")
    def pay(ctx: Any) -> Any:
        receipt = yield Run("charge", charge, ctx.input["order"])
        yield Delay("settle", "2d")
        return receipt

    async def scenario() -> None:
        async with AsyncHarness([pay]) as h:
            h.crash_after("charge")
            started = await h.start_workflow("pay", {"order": "o-1"})
            await h.run_until_idle()  # crashed after the charge was recorded
            with pytest.raises(TimeoutError):
                await h.wait_for_run(started.id, timeout="1d")
            done = await h.wait_for_run(started.id, timeout="3d")
            assert done.output == "paid o-1" and calls == ["o-1"]  # never charged twice
            with pytest.raises(InvalidArgumentError):
                await h.get_run("")

    run(scenario())


@pytest.mark.postgres
def test_async_harness_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    """With ``dsn=``: the asyncio store; a sync Transaction function gets a blocking connection, an
    async one the AsyncConnection of the step's transaction."""
    seen: dict[str, str] = {}

    def sync_tx(conn: Any, n: int) -> int:
        seen["sync"] = type(conn).__name__
        return int(conn.execute("SELECT %s::int + 1", (n,)).fetchone()[0])

    async def async_tx(conn: Any, n: int) -> int:
        seen["async"] = type(conn).__name__
        cur = await conn.execute("SELECT %s::int * 10", (n,))
        return int((await cur.fetchone())[0])

    @workflow("tx")
    def tx(ctx: Any) -> Any:
        a = yield Transaction("sync", sync_tx, 1)
        b = yield Transaction("async", async_tx, a)
        return b

    async def scenario() -> None:
        async with AsyncHarness([tx], dsn=pg_dsn, schema=pg_schema) as h:
            started = await h.start_workflow("tx")
            assert (await h.run_until_complete(started.id)).output == 20

    run(scenario())
    assert seen == {"sync": "Connection", "async": "AsyncConnection"}


# -- AsyncEngine ----------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_async_engine_runs_async_steps_as_tasks_on_its_loop(pg_dsn: str, pg_schema: str) -> None:
    """200 runs each awaiting a 0.5-s async step finish together, with no thread per step; a child
    workflow, a failing step and an async Transaction whose failure rolls its writes back work too."""

    async def slow(n: int) -> int:
        await asyncio.sleep(0.5)
        return n

    @workflow("slow")
    def slow_wf(ctx: Any) -> Any:
        return (yield Run("slow", slow, ctx.input["n"]))

    async def write_then_fail(conn: psycopg.AsyncConnection[Any], table: str) -> None:
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        raise ValueError("refused")

    @workflow("parent")
    def parent(ctx: Any) -> Any:
        child = yield Child("kid", slow_wf, {"n": 7})
        try:
            yield Transaction("tx", write_then_fail, ctx.input["table"])
        except StepFailedError as exc:
            return {"child": child, "error": exc.message}
        return None

    table = f'"{pg_schema}".ledger'

    async def scenario() -> None:
        async with pgflow.AsyncEngine(
            pg_dsn, workflows=[slow_wf, parent], schema=pg_schema, concurrency=300
        ) as eng:
            before = threading.active_count()
            started = time.monotonic()
            runs = await asyncio.gather(*(eng.start_workflow(slow_wf, {"n": i}) for i in range(200)))
            done = await asyncio.gather(*(eng.wait_for_run(r.id, timeout="20s") for r in runs))
            assert [d.output for d in done] == list(range(200))
            assert time.monotonic() - started < 10  # concurrently, not 100 s one after another
            assert threading.active_count() <= before + 2  # no thread per step
            ours = asyncio.get_running_loop()
            assert all(t.get_loop() is ours for t in asyncio.all_tasks())
            p = await eng.start_workflow(parent, {"table": table})
            finished = await eng.wait_for_run(p.id, timeout="20s")
            assert finished.output == {"child": 7, "error": "refused"}

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        conn.execute(f"CREATE TABLE {table} (v int)")
    run(scenario())
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)  # rolled back


@pytest.mark.postgres
def test_async_engine_stop_cancels_what_outlives_the_timeout(pg_dsn: str, pg_schema: str) -> None:
    """stop(timeout) lets a short step finish and record; a step still running then is cancelled and
    its run left running, to its lease (another worker takes it over)."""
    events: list[str] = []

    async def short() -> str:
        await asyncio.sleep(0.2)
        events.append("short done")
        return "ok"

    async def endless() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            events.append("endless cancelled")
            raise

    @workflow("short")
    def short_wf(ctx: Any) -> Any:
        return (yield Run("s", short))

    @workflow("endless")
    def endless_wf(ctx: Any) -> Any:
        return (yield Run("e", endless))

    async def scenario() -> None:
        eng = await pgflow.AsyncEngine(pg_dsn, workflows=[short_wf, endless_wf], schema=pg_schema).start()
        a = await eng.start_workflow(short_wf)
        b = await eng.start_workflow(endless_wf)
        await eng.wait_for_run(b.id, until=["running"], timeout="10s")
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await eng.stop(timeout="1s")
        assert time.monotonic() - t0 < 3
        async with pgflow.AsyncClient(pg_dsn, schema=pg_schema) as client:
            assert (await client.get_run(a.id)).output == "ok"
            left = await client.get_run(b.id)
            assert left.status == "running" and left.timeline["e"].status == "running"

    run(scenario())
    assert events == ["short done", "endless cancelled"]


# -- AsyncClient ------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_async_client_waits_without_threads_or_connections(pg_dsn: str, pg_schema: str) -> None:
    """100 concurrent wait_for_run calls hold no thread and one LISTEN connection; a get_run beside
    them answers at once; each waiter returns when its run completes."""

    @workflow("gate")
    def gate(ctx: Any) -> Any:
        return (yield WaitFor("open", event="open"))

    async def scenario() -> None:
        async with (
            pgflow.AsyncEngine(pg_dsn, workflows=[gate], schema=pg_schema) as eng,
            pgflow.AsyncClient(pg_dsn, schema=pg_schema) as client,
        ):
            runs = [await client.start_workflow("gate") for _ in range(100)]
            for r in runs:
                await eng.wait_for_run(r.id, until=["paused"], timeout="10s")
            threads = threading.active_count()
            waiters = [asyncio.ensure_future(client.wait_for_run(r.id, timeout="20s")) for r in runs]
            await asyncio.sleep(0.3)
            assert threading.active_count() == threads
            t0 = time.monotonic()
            await client.get_run(runs[0].id)
            assert time.monotonic() - t0 < 0.5
            async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
                cur = await conn.execute(  # this schema's listeners (other tests' may still linger)
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' AND query LIKE %s",
                    (f"%{pg_schema}%",),
                )
                listeners = (await cur.fetchone())[0]
            assert 1 <= listeners <= 2  # the engine's and the client's, whatever the number of waiters
            for r in runs:
                await client.trigger_event(r.id, "open", {"n": 1})
            done = await asyncio.gather(*waiters)
            assert {d.status.value for d in done} == {"completed"}
            with pytest.raises(RunNotFoundError):
                await client.get_run("missing")

    run(scenario())


def test_async_client_reports_bad_arguments_before_connecting() -> None:
    """Bad input is a named error even when no database could be reached."""

    async def scenario() -> None:
        client = pgflow.AsyncClient("postgresql://nobody@127.0.0.1:1/none")
        with pytest.raises(InvalidArgumentError):
            await client.get_run("")
        with pytest.raises(InvalidArgumentError):
            await client.start_workflow("wf", resource_id=7)  # type: ignore[call-overload]
        await client.close()

    run(scenario())
