"""The schedule operations of the Store contract (SPEC §16), for every store: MemoryStore, PostgresStore
and the asyncio Postgres store (the ``store`` fixture of the contract suite)."""

from __future__ import annotations

from typing import Any

import attrs
import pendulum
import pytest

from pgflow.errors import ScheduleNotFoundError
from pgflow.records import RunStatus
from pgflow.schedules import ON_TIME, ScheduleRow, new_row, tick_key
from pgflow.store import NewRun, RunQuery, Store
from test_store_contract import T0, sec
from test_store_contract import store as contract_store

store = contract_store  # the contract suite's fixture: every store, same tests

ZERO = pendulum.duration(0)


def schedule(
    sid: str = "s", cron: str = "*/10 * * * * *", zone: str = "UTC", catch_up: Any = "latest", **changes: Any
) -> ScheduleRow:
    """A schedule created at T0 (every 10 s by default: first tick T0 + 10 s)."""
    return attrs.evolve(new_row(sid, "wf", cron, zone, {"k": [1, 2]}, catch_up, T0), **changes)


def test_a_schedule_round_trips(store: Store) -> None:
    written = store.put_schedule(schedule(zone="Europe/Paris", catch_up="all", cron="0 9 * * 1-5"))
    assert store.get_schedule("s") == written
    assert written.next_tick_at == pendulum.datetime(2024, 1, 1, 8, tz="UTC")  # a Monday, 09:00 Paris
    assert (written.input, written.catch_up, written.paused) == ({"k": [1, 2]}, "all", False)
    assert store.get_schedule("missing") is None


def test_schedules_are_listed_by_id_in_byte_order(store: Store) -> None:
    for sid in ("b", "B", "a-1", "a"):
        store.put_schedule(schedule(sid))
    assert [s.schedule_id for s in store.list_schedules()] == ["B", "a", "a-1", "b"]


def test_putting_again_keeps_the_place_of_the_same_cron(store: Store) -> None:
    store.put_schedule(schedule())
    store.fire_schedules(sec(10), ON_TIME, 10)
    again = store.put_schedule(
        attrs.evolve(schedule(), input={"v": 2}, created_at=sec(12), updated_at=sec(12))
    )
    assert (again.next_tick_at, again.last_tick_at, again.input) == (sec(20), sec(10), {"v": 2})
    assert again.created_at == T0
    changed = store.put_schedule(attrs.evolve(schedule(cron="*/7 * * * * *"), next_tick_at=sec(14)))
    assert changed.next_tick_at == sec(14)


def test_pausing_and_resuming(store: Store) -> None:
    store.put_schedule(schedule())
    paused = store.set_schedule_paused("s", True, sec(3))
    assert paused.paused and paused.next_tick_at is None and store.get_schedule("s") == paused
    assert store.next_schedule_tick() is None
    assert store.fire_schedules(sec(60), ON_TIME, 10).started == ()
    resumed = store.set_schedule_paused("s", False, sec(61))
    assert not resumed.paused and resumed.next_tick_at == sec(70) == store.next_schedule_tick()
    with pytest.raises(ScheduleNotFoundError, match="'nope'"):
        store.set_schedule_paused("nope", True, sec(1))


def test_deleting(store: Store) -> None:
    store.put_schedule(schedule())
    store.delete_schedule("s")
    assert store.get_schedule("s") is None and store.list_schedules() == []
    with pytest.raises(ScheduleNotFoundError):
        store.delete_schedule("s")


def test_firing_starts_the_due_ticks_and_moves_the_next_tick(store: Store) -> None:
    store.register_workflow("wf", [], T0, {"retries": 2, "timeout": 60.0, "retry_backoff": 3.0})
    store.put_schedule(schedule())
    store.put_schedule(schedule("later", "0 * * * *"))
    assert store.fire_schedules(sec(9), ON_TIME, 10).started == ()
    fired = store.fire_schedules(sec(20), ON_TIME, 10)  # 10 s and 20 s are both on time
    assert len(fired.started) == 2 and not fired.more and fired.next_tick_at == sec(30)
    runs = [store.get(run_id, None)[0] for run_id in fired.started]
    assert [r.idempotency_key for r in runs] == [tick_key("s", sec(10)), tick_key("s", sec(20))]
    for run in runs:
        assert (run.status, run.workflow_id, run.input, run.created_at, run.due_at) == (
            RunStatus.PENDING, "wf", {"k": [1, 2]}, sec(20), sec(20),
        )  # fmt: skip
        assert (run.max_retries, run.retry_backoff, run.timeout_at) == (2, 3.0, sec(80))
    row = store.get_schedule("s")
    assert row is not None
    assert (row.next_tick_at, row.last_tick_at, row.last_run_id) == (sec(30), sec(20), runs[1].id)
    assert row.updated_at == sec(20)
    assert store.fire_schedules(sec(21), ON_TIME, 10).started == ()  # nothing is due twice


def test_firing_applies_catch_up_to_the_missed_ticks(store: Store) -> None:
    for policy in ("latest", "all", "none"):
        store.put_schedule(schedule(policy, catch_up=policy))
    store.fire_schedules(sec(55), ZERO, 10)  # 10…50 s are missed: the harness is never late
    rows, _, _ = store.list_runs(RunQuery(limit=100))
    keys = {r.idempotency_key for r in rows}
    assert keys == {tick_key("latest", sec(50))} | {tick_key("all", sec(n)) for n in (10, 20, 30, 40, 50)}
    assert {s.schedule_id: s.next_tick_at for s in store.list_schedules()} == dict.fromkeys(
        ("all", "latest", "none"), sec(60)
    )


def test_firing_fires_at_most_limit_schedules_and_says_when_more_are_due(store: Store) -> None:
    for i in range(5):
        store.put_schedule(schedule(f"s{i}"))
    first = store.fire_schedules(sec(10), ON_TIME, 3)
    assert len(first.started) == 3 and first.more and first.next_tick_at == sec(10)
    second = store.fire_schedules(sec(10), ON_TIME, 3)
    assert len(second.started) == 2 and not second.more and second.next_tick_at == sec(20)


def test_a_tick_whose_key_is_taken_starts_nothing_more(store: Store) -> None:
    """Another engine (its clock ahead) started this tick already: the key holds; the schedule
    remembers that run."""
    key = tick_key("s", sec(10))
    holder, _ = store.start_run(NewRun("earlier", "wf", None, None, 0, 1.0, key, None, sec(9)))
    store.put_schedule(schedule())
    fired = store.fire_schedules(sec(10), ON_TIME, 10)
    assert fired.started == ()
    row = store.get_schedule("s")
    assert row is not None and (row.last_tick_at, row.last_run_id, row.next_tick_at) == (
        sec(10),
        holder.id,
        sec(20),
    )


def test_the_next_tick_is_the_earliest_of_the_active_schedules(store: Store) -> None:
    assert store.next_schedule_tick() is None
    store.put_schedule(schedule("a", "0 * * * *"))
    store.put_schedule(schedule("b", "*/15 * * * * *"))
    assert store.next_schedule_tick() == sec(15)
    store.set_schedule_paused("b", True, sec(1))
    assert store.next_schedule_tick() == sec(3600)
