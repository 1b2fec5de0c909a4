"""Durable cron schedules end to end (SPEC §16): the Harness through 30 simulated days, catch-up,
pausing, replacing, bad input; engines on PostgreSQL (each tick one run, however many fire it)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pendulum
import pytest
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import (
    InvalidArgumentError,
    InvalidInputError,
    Schedule,
    ScheduleInfo,
    ScheduleNotFoundError,
    UnknownWorkflowError,
    WaitFor,
    WorkflowRun,
    workflow,
)
from pgflow.postgres import PostgresStore
from pgflow.schedules import ON_TIME, tick_key
from pgflow.testing import AsyncHarness, Harness, SimClock

PARIS = "Europe/Paris"
T0 = pendulum.datetime(2026, 3, 16, tz="UTC")  # a Monday; Paris moves to summer time on 2026-03-29


@workflow("report")
def report(ctx: pgflow.Context[Any]) -> Any:
    return ctx.input
    yield  # a generator: no steps, so 30 days of ticks stay quick


@workflow("retried", retries=3, timeout="1h")
def retried(ctx: pgflow.Context[Any]) -> Any:
    return None
    yield


@workflow("one-at-a-time", concurrency=1)
def one_at_a_time(ctx: pgflow.Context[Any]) -> pgflow.Flow[None]:
    yield from WaitFor("done", event="done")


@workflow("typed", input=dict[str, int])
def typed(ctx: pgflow.Context[dict[str, int]]) -> Any:
    return ctx.input
    yield


HarnessFactory = Callable[..., Harness]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_harness(backend: str, request: pytest.FixtureRequest) -> Iterator[HarnessFactory]:
    """Harnesses in memory, or on PostgreSQL (``Harness(dsn=...)``) in the test's schema."""
    made: list[Harness] = []

    def make(*workflows: pgflow.Workflow, start: pendulum.DateTime = T0) -> Harness:
        options: dict[str, Any] = {"clock": SimClock(start)}
        if backend == "postgres":
            options |= {
                "dsn": request.getfixturevalue("pg_dsn"),
                "schema": request.getfixturevalue("pg_schema"),
            }
        h = Harness(list(workflows) or [report], **options)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def all_runs(client: Any) -> list[WorkflowRun]:
    runs: list[WorkflowRun] = []
    cursor = None
    while True:
        page = client.get_runs(limit=100, starting_after=cursor)
        runs += page.items
        if not page.has_more:
            return runs
        cursor = page.next_cursor


def ticks_of(runs: list[WorkflowRun], schedule_id: str) -> list[str]:
    """The ticks (from the runs' keys) of one schedule, in the order the runs were created."""
    prefix = f"schedule:{schedule_id}:"
    mine = [r for r in runs if (r.idempotency_key or "").startswith(prefix)]
    mine.sort(key=lambda r: (r.created_at, r.idempotency_key))
    return [(r.idempotency_key or "")[len(prefix) :] for r in mine]


def tick_of(run: WorkflowRun) -> pendulum.DateTime:
    """The tick a scheduled run was started for (from its key, ``schedule:ID:TICK``)."""
    parsed = pendulum.parse((run.idempotency_key or "").split(":", 2)[2])
    assert isinstance(parsed, pendulum.DateTime)
    return parsed


def iso(t: pendulum.DateTime) -> str:
    return t.in_timezone("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


# -- 30 simulated days -------------------------------------------------------------------------------


def test_thirty_days_of_schedules_fire_every_tick_once_in_order(
    make_harness: HarnessFactory, backend: str
) -> None:
    """Every 15 min, weekdays 09:00 Paris across the spring change, and a six-field seconds cron:
    ``advance`` fires each tick once, at its own time, in order, keyed by the tick. 30 days in
    memory; on PostgreSQL the 4 days around the change (the same path, a round trip per query)."""
    start, days = (T0, 30) if backend == "memory" else (pendulum.datetime(2026, 3, 27, tz="UTC"), 4)
    h = make_harness(start=start)
    h.create_schedule("quarter", report, "*/15 * * * *", input={"n": 1})
    h.create_schedule("paris", "report", "0 9 * * 1-5", timezone=PARIS)
    h.create_schedule("seconds", report, "15,45 0 12 * * *", catch_up="none")
    h.advance(f"{days}d")
    runs = all_runs(h)

    summer = pendulum.datetime(2026, 3, 29, 1, tz="UTC")  # Paris: 02:00 CET -> 03:00 CEST
    weekdays = [start.add(days=d) for d in range(days) if start.add(days=d).day_of_week < 5]
    paris = [iso(d.add(hours=8 if d < summer else 7)) for d in weekdays]
    assert ticks_of(runs, "quarter") == [iso(start.add(minutes=15 * i)) for i in range(1, days * 96 + 1)]
    assert (
        ticks_of(runs, "paris") == paris
        and any("T08:" in t for t in paris)
        and any("T07:" in t for t in paris)
    )
    assert ticks_of(runs, "seconds") == [
        iso(start.add(days=d, hours=12, seconds=s)) for d in range(days) for s in (15, 45)
    ]
    assert len(runs) == len({r.idempotency_key for r in runs}) == days * 96 + len(paris) + 2 * days
    for run in runs:
        assert run.created_at == tick_of(run), run  # started at the tick's own simulated time
        assert run.status == "completed"
    inputs = {repr(r.input) for r in runs if (r.idempotency_key or "").startswith("schedule:quarter:")}
    assert inputs == {repr({"n": 1})}
    info = h.get_schedule("paris")
    assert info.last_tick_at is not None and iso(info.last_tick_at) == paris[-1]
    assert info.last_run_id in {r.id for r in runs if r.idempotency_key == f"schedule:paris:{paris[-1]}"}


# -- catch-up, pausing, replacing, deleting ------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "started"),
    [
        ("latest", ["02:45"]),
        ("none", []),
        ("all", [f"{h:02d}:{m:02d}" for h in range(3) for m in (0, 15, 30, 45)][1:]),
    ],
)
def test_ticks_the_clock_jumps_over_are_missed(
    make_harness: HarnessFactory, policy: str, started: list[str]
) -> None:
    """``clock.set`` jumps: the ticks jumped over count as missed, and ``catch_up`` says which start;
    after that, ``advance`` fires each tick on time again."""
    h = make_harness()
    h.create_schedule("s", report, "*/15 * * * *", catch_up=policy)  # type: ignore[arg-type]
    h.clock.set(T0.add(hours=2, minutes=50))
    h.run_until_idle()
    assert [t[11:16] for t in ticks_of(all_runs(h), "s")] == started
    h.advance("30m")
    assert [t[11:16] for t in ticks_of(all_runs(h), "s")] == [*started, "03:00", "03:15"]


def test_catch_up_all_starts_at_most_a_thousand_missed_ticks(make_harness: HarnessFactory) -> None:
    h = make_harness()
    h.create_schedule("s", report, "* * * * * *", catch_up="all")
    h.clock.set(T0.add(hours=1, microseconds=500_000))  # every tick is missed, none on time
    h.run_until_idle()
    ticks = ticks_of(all_runs(h), "s")
    assert len(ticks) == 1000
    assert ticks[0] == iso(T0.add(hours=1, seconds=-999)) and ticks[-1] == iso(T0.add(hours=1))


def test_a_paused_schedule_starts_nothing_and_resumes_from_the_next_tick(
    make_harness: HarnessFactory,
) -> None:
    h = make_harness()
    h.create_schedule("s", report, "*/15 * * * *", catch_up="all")
    h.advance("1h")
    paused = h.pause_schedule("s")
    assert paused.paused and paused.next_tick_at is None
    h.advance("2h")
    assert len(ticks_of(all_runs(h), "s")) == 4
    h.advance("7m")
    resumed = h.resume_schedule("s")
    assert not resumed.paused and resumed.next_tick_at == T0.add(hours=3, minutes=15)
    h.advance("1h")
    assert [t[11:16] for t in ticks_of(all_runs(h), "s")] == [
        "00:15", "00:30", "00:45", "01:00", "03:15", "03:30", "03:45", "04:00",
    ]  # fmt: skip
    assert h.pause_schedule("s").paused and h.pause_schedule("s").paused  # pausing twice is fine


def test_replacing_a_schedule_keeps_its_place_unless_the_cron_changes(make_harness: HarnessFactory) -> None:
    h = make_harness()
    h.create_schedule("s", report, "*/15 * * * *", input={"v": 1})
    h.advance("20m")
    again = h.create_schedule("s", report, "*/15 * * * *", input={"v": 2})  # an engine restarting
    assert again.next_tick_at == T0.add(minutes=30) and again.input == {"v": 2}
    h.advance("10m")
    runs = all_runs(h)
    assert [(t[11:16], r.input) for t, r in zip(ticks_of(runs, "s"), sorted(runs, key=lambda r: r.created_at), strict=True)] == [
        ("00:15", {"v": 1}), ("00:30", {"v": 2}),
    ]  # fmt: skip
    hourly = h.create_schedule("s", report, "0 * * * *")
    assert hourly.next_tick_at == T0.add(hours=1) and hourly.last_tick_at == T0.add(minutes=30)
    assert [s.schedule_id for s in h.list_schedules()] == ["s"]


def test_deleting_a_schedule_keeps_its_runs(make_harness: HarnessFactory) -> None:
    h = make_harness()
    h.create_schedule("a", report, "*/15 * * * *")
    h.create_schedule("b", report, "0 * * * *")
    h.advance("1h")
    h.delete_schedule("a")
    h.advance("1h")
    runs = all_runs(h)
    assert len(ticks_of(runs, "a")) == 4 and len(ticks_of(runs, "b")) == 2
    assert [s.schedule_id for s in h.list_schedules()] == ["b"]
    with pytest.raises(ScheduleNotFoundError, match="'a'"):
        h.get_schedule("a")


def test_a_tick_run_takes_the_workflows_run_defaults(make_harness: HarnessFactory) -> None:
    h = make_harness(report, retried)
    h.create_schedule("s", "retried", "0 * * * *")
    h.advance("1h")
    (run,) = all_runs(h)
    assert run.max_retries == 3 and run.timeout_at == T0.add(hours=2)


def test_tick_runs_of_a_limited_workflow_wait_for_a_place(make_harness: HarnessFactory) -> None:
    """A scheduled run is limited like any other: with ``concurrency=1``, the tick runs that find
    the place taken stay ``pending`` (waiting for nothing) and start one by one as places free."""
    h = make_harness(one_at_a_time)
    h.create_schedule("s", one_at_a_time, "0 * * * *")
    h.advance("3h")
    runs = sorted(all_runs(h), key=lambda r: r.created_at)
    assert [iso(tick_of(r))[11:16] for r in runs] == ["01:00", "02:00", "03:00"]
    first, *rest = runs
    assert first.status == "paused" and first.waiting is not None  # in progress: waiting for "done"
    assert [(r.status, r.waiting) for r in rest] == [("pending", None), ("pending", None)]
    h.trigger_event(first.id, "done")
    h.run_until_idle()
    assert [h.get_run(r.id).status for r in runs] == ["completed", "paused", "pending"]


# -- bad input -----------------------------------------------------------------------------------------


def test_bad_schedules_are_named_errors_and_store_nothing(make_harness: HarnessFactory) -> None:
    h = make_harness(report, typed)
    with pytest.raises(InvalidArgumentError, match="cron"):
        h.create_schedule("s", report, "0 9 * *")
    with pytest.raises(InvalidArgumentError, match="cron"):
        h.create_schedule("s", report, "0 9 * * MON-FRY")
    with pytest.raises(InvalidArgumentError, match="timezone"):
        h.create_schedule("s", report, "0 9 * * 1-5", timezone="Europe/Pari")
    with pytest.raises(InvalidArgumentError, match="catch_up"):
        h.create_schedule("s", report, "0 9 * * 1-5", catch_up="every")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="schedule_id"):
        h.create_schedule("", report, "0 9 * * 1-5")
    with pytest.raises(UnknownWorkflowError, match="nightly"):
        h.create_schedule("s", "nightly", "0 9 * * 1-5")
    with pytest.raises(InvalidInputError):
        h.create_schedule("s", "typed", "0 9 * * 1-5", input={"n": "many"})
    assert h.list_schedules() == []
    for call in (h.get_schedule, h.pause_schedule, h.resume_schedule, h.delete_schedule):
        with pytest.raises(ScheduleNotFoundError, match="'missing'"):
            call("missing")
    assert isinstance(ScheduleNotFoundError("x"), pgflow.PgflowError)


def test_async_harness_has_the_schedule_methods() -> None:
    async def scenario() -> None:
        async with AsyncHarness([report], clock=SimClock(T0)) as h:
            info = await h.create_schedule("s", report, "0 */6 * * *")
            assert isinstance(info, ScheduleInfo) and info.next_tick_at == T0.add(hours=6)
            await h.advance("1d")
            assert [s.last_tick_at for s in await h.list_schedules()] == [T0.add(days=1)]
            assert (await h.pause_schedule("s")).paused
            assert not (await h.resume_schedule("s")).paused
            assert (await h.get_schedule("s")).next_tick_at == T0.add(days=1, hours=6)
            await h.delete_schedule("s")
            assert await h.list_schedules() == []
            assert len((await h.get_runs()).items) == 4

    asyncio.run(scenario())


@pytest.mark.postgres
def test_clients_on_postgresql_name_bad_schedules_and_store_nothing(pg_dsn: str, pg_schema: str) -> None:
    """A Client and an AsyncClient (no local definitions: a workflow id is looked up among the
    registered ones) answer an unknown workflow, a bad cron or zone and an unknown schedule id with
    their named errors, and store nothing."""
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        with pytest.raises(UnknownWorkflowError, match="'nightly'"):
            client.create_schedule("s", "nightly", "0 2 * * *")
        with pytest.raises(InvalidArgumentError, match="cron"):
            client.create_schedule("s", report, "0 2 * *")
        with pytest.raises(InvalidArgumentError, match="timezone"):
            client.create_schedule("s", report, "0 2 * * *", timezone="Mars/Olympus")
        for call in (
            client.get_schedule,
            client.pause_schedule,
            client.resume_schedule,
            client.delete_schedule,
        ):
            with pytest.raises(ScheduleNotFoundError, match="'missing'"):
                call("missing")
        assert client.list_schedules() == []

    async def scenario() -> None:
        async with pgflow.AsyncClient(pg_dsn, schema=pg_schema) as aclient:
            with pytest.raises(UnknownWorkflowError, match="'nightly'"):
                await aclient.create_schedule("s", "nightly", "0 2 * * *")
            with pytest.raises(InvalidArgumentError, match="cron"):
                await aclient.create_schedule("s", report, "61 2 * * *")
            with pytest.raises(InvalidArgumentError, match="timezone"):
                await aclient.create_schedule("s", report, "0 2 * * *", timezone="Europe/Pari")
            for call in (
                aclient.get_schedule,
                aclient.pause_schedule,
                aclient.resume_schedule,
                aclient.delete_schedule,
            ):
                with pytest.raises(ScheduleNotFoundError, match="'missing'"):
                    await call("missing")
            assert await aclient.list_schedules() == []

    asyncio.run(scenario())


@pytest.mark.postgres
def test_an_engine_with_a_bad_schedule_does_not_start_and_stores_none(pg_dsn: str, pg_schema: str) -> None:
    """``Engine(schedules=...)`` resolves every schedule's workflow and input at start, before it
    writes any: an unknown workflow or a bad input stops the start with its named error."""
    good = Schedule("good", report, "0 * * * *")
    for bad, error, word in (
        (Schedule("unknown", "nightly", "0 2 * * *"), UnknownWorkflowError, "'nightly'"),
        (Schedule("typed", typed, "0 2 * * *", input={"n": "many"}), InvalidInputError, "typed"),
    ):
        engine = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[report, typed], schedules=[good, bad])
        try:
            with pytest.raises(error, match=word):
                engine.start()
            assert engine.list_schedules() == []
        finally:
            engine.stop()


# -- engines on PostgreSQL ---------------------------------------------------------------------------------


@pytest.mark.postgres
def test_an_engine_upserts_its_schedules_and_fires_each_second_within_two_seconds(
    pg_dsn: str, pg_schema: str
) -> None:
    every = Schedule("every-second", report, "* * * * * *", input={"from": "engine"})
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[report], schedules=[every]) as engine:
        assert [s.schedule_id for s in engine.list_schedules()] == ["every-second"]
        time.sleep(3.5)
    runs = all_runs(pgflow.Client(pg_dsn, schema=pg_schema))
    ticks = sorted(tick_of(r) for r in runs)
    assert len(ticks) >= 3
    assert [b - a for a, b in itertools.pairwise(ticks)] == [pendulum.duration(seconds=1)] * (len(ticks) - 1)
    for run in runs:
        assert pendulum.duration(0) <= run.created_at - tick_of(run) <= pendulum.duration(seconds=2), run
        assert run.input == {"from": "engine"}


@pytest.mark.postgres
def test_an_engine_catches_up_what_it_missed_when_its_clock_jumps(pg_dsn: str, pg_schema: str) -> None:
    """A worker that finds ticks older than the on-time window applies ``catch_up``."""
    clock = SimClock(T0.add(minutes=1))
    hourly = [Schedule(f"{p}-hourly", report, "0 * * * *", catch_up=p) for p in ("latest", "all", "none")]  # type: ignore[arg-type]
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[report], schedules=hourly, clock=clock) as engine:
        clock.set(T0.add(hours=5, seconds=5))  # 01:00…04:00 missed, 05:00 on time (5 s late)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(engine.get_runs(limit=100).items) < 7:
            time.sleep(0.05)
        time.sleep(0.3)
        runs = engine.get_runs(limit=100).items
    hours = [f"0{h}:00" for h in range(1, 6)]
    assert [t[11:16] for t in ticks_of(runs, "all-hourly")] == hours
    assert [t[11:16] for t in ticks_of(runs, "latest-hourly")] == ["05:00"]
    assert [t[11:16] for t in ticks_of(runs, "none-hourly")] == ["05:00"]
    assert pendulum.duration(seconds=5) < ON_TIME


@pytest.mark.postgres
def test_an_async_engine_fires_its_schedules(pg_dsn: str, pg_schema: str) -> None:
    async def scenario() -> list[WorkflowRun]:
        every = Schedule("every-second", report, "* * * * * *")
        async with pgflow.AsyncEngine(
            pg_dsn, schema=pg_schema, workflows=[report], schedules=[every]
        ) as engine:
            await asyncio.sleep(2.5)
            assert [s.schedule_id for s in await engine.list_schedules()] == ["every-second"]
            return (await engine.get_runs(limit=100)).items

    runs = asyncio.run(scenario())
    assert len(runs) >= 2
    for run in runs:
        assert run.created_at - tick_of(run) <= pendulum.duration(seconds=2)


@pytest.mark.postgres
def test_two_stores_firing_together_start_one_run_per_tick(pg_dsn: str, pg_schema: str) -> None:
    """Two engines' stores fire the same 20 schedules at the same moments (now and then one of their
    clocks 0.7 s behind the other's): each tick starts exactly one run, by one of them."""
    with (
        ConnectionPool(pg_dsn, min_size=1, max_size=4) as pool_a,
        ConnectionPool(pg_dsn, min_size=1, max_size=4) as pool_b,
    ):
        a, b = PostgresStore(pool_a, pg_schema), PostgresStore(pool_b, pg_schema)
        a.migrate()
        with Harness([report], dsn=pg_dsn, schema=pg_schema, clock=SimClock(T0)) as h:
            for i in range(20):
                h.create_schedule(f"s{i:02d}", report, "* * * * * *")
        started: dict[str, list[str]] = {"a": [], "b": []}
        barrier = threading.Barrier(2)

        def fire(name: str, store: PostgresStore, lagging: Callable[[int], bool]) -> None:
            for step in range(1, 61):
                lag = 0.7 if lagging(step) and step < 60 else 0.0  # now and then, its clock is behind
                now = T0.add(microseconds=int((step * 0.5 - lag) * 1_000_000))
                barrier.wait()
                while True:
                    fired = store.fire_schedules(now, ON_TIME, 7)
                    started[name] += fired.started
                    if not fired.more:
                        break

        threads = [
            threading.Thread(target=fire, args=("a", a, lambda step: step % 3 == 0)),
            threading.Thread(target=fire, args=("b", b, lambda step: step % 5 == 0)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        both = started["a"] + started["b"]
        assert started["a"] and started["b"], "one store did all the work: the race proved nothing"
        assert len(both) == len(set(both)) == 20 * 30
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            runs = all_runs(client)
        keys = Counter(r.idempotency_key for r in runs)
        assert len(runs) == 600 and max(keys.values()) == 1
        assert {r.id for r in runs} == set(both)
        assert keys.keys() == {
            tick_key(f"s{i:02d}", T0.add(seconds=s)) for i in range(20) for s in range(1, 31)
        }
