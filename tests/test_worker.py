"""The engine's Worker (dispatcher, thread pool, heartbeats) around the in-memory store: the races of
a graceful stop, which do not depend on the store."""

from __future__ import annotations

import threading
import time
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import Run, workflow
from pgflow.clock import SystemClock
from pgflow.execution import StepCaller
from pgflow.memory import MemoryStore
from pgflow.processor import RunProcessor, Settings
from pgflow.records import TERMINAL, RunStatus
from pgflow.store import Claimed, NewRun
from pgflow.worker import FALLBACK_POLL, SETTLE, Worker, idle_timeout
from procs.common import eventually


def _double(x: int) -> int:
    return 2 * x


@workflow("double")
def double(ctx: pgflow.Context[Any]):
    return (yield Run("double", _double, ctx.input))


class ClaimInFlightAtStop(MemoryStore):
    """A store whose claim that finds run ``stall_on`` returns only once ``stop()`` has begun (and
    has had ample time to go on): a claim in flight while the engine stops."""

    def __init__(self, stall_on: str) -> None:
        super().__init__()
        self.stall_on = stall_on
        self.claimed = threading.Event()
        self.stopping = threading.Event()

    def claim(self, *args: Any, **kwargs: Any) -> list[Claimed]:
        found = super().claim(*args, **kwargs)
        if any(c.run.id == self.stall_on for c in found):
            self.claimed.set()
            self.stopping.wait(5)
            time.sleep(0.2)
        return found


@pytest.mark.parametrize(
    ("runs", "concurrency"),
    [
        pytest.param(["r1"], 2, id="the dispatcher's claim"),
        pytest.param(["r0", "r1"], 1, id="a worker thread's claim of its next run"),
    ],
)
def test_a_run_claimed_while_the_worker_stops_is_released_before_stop_returns(
    runs: list[str], concurrency: int
) -> None:
    """The claim of r1 returns after stop() began: r1 is given back (pending, no lease, due) before
    stop() returns. (The dispatcher's claim used to meet a shut-down thread pool and keep the run
    leased; a worker thread's claim went unnoticed, so stop() returned, and the engine closed its
    connections, with the run still leased.)"""
    store, clock = ClaimInFlightAtStop(stall_on=runs[-1]), SystemClock()
    settings = Settings(pendulum.duration(seconds=30), pendulum.duration(seconds=1))
    stopping = threading.Event()
    caller = StepCaller()
    processor = RunProcessor(store, {"double": double}, clock, settings, caller, stopping=stopping)
    worker = Worker(store, {"double": double}, processor, settings, concurrency, clock)
    worker.stopping = store.stopping = stopping
    for run_id in runs:
        store.start_run(NewRun(run_id, "double", None, 21, 0, 1.0, None, None, clock.now()))
    worker.start()
    try:
        assert store.claimed.wait(5)
        worker.stop(timeout=3)
        row, steps = store.get("r1", None)
    finally:
        caller.close()
    assert row.status == RunStatus.PENDING and row.lease_owner is None and steps == []
    assert row.due_at is not None and row.due_at <= clock.now()
    if "r0" in runs:
        assert store.get("r0", None)[0].output == 42


_started: dict[str, float] = {}  # run id -> when its step first executed (time.monotonic())


def _nap(run_id: str) -> str:
    _started.setdefault(run_id, time.monotonic())
    time.sleep(0.05)
    return run_id


@workflow("nap")
def nap(ctx: pgflow.Context[Any]):
    return (yield Run("nap", _nap, ctx.run_id))


class GatedStore(MemoryStore):
    """A store whose claims wait while ``open`` is clear (the database unreachable); it notes when
    each run was claimed and the most runs one owner held leased at once."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()
        self.claimed_at: dict[str, float] = {}
        self.most_held = 0

    def claim(self, owner: str, *args: Any, **kwargs: Any) -> list[Claimed]:
        self.open.wait()
        found = super().claim(owner, *args, **kwargs)
        with self._lock:
            for item in found:
                self.claimed_at.setdefault(item.run.id, time.monotonic())
            held = sum(1 for r in self._runs.values() if r.lease_owner == owner and r.status not in TERMINAL)
            self.most_held = max(self.most_held, held)
        return found


def test_a_worker_never_holds_more_runs_than_its_concurrency() -> None:
    """Claims blocked for a while (the database unreachable) then all answered: the worker holds at
    most ``concurrency`` leases and starts each run it claimed at once. (The dispatcher used to claim
    for the slots its threads were claiming for too; the extra runs waited in the thread pool's
    queue, leased and heartbeated, until the threads found nothing else to claim: the whole backlog.)"""
    store, clock = GatedStore(), SystemClock()
    settings = Settings(pendulum.duration(seconds=30), pendulum.duration(seconds=1))
    caller = StepCaller()
    processor = RunProcessor(store, {"nap": nap}, clock, settings, caller)
    worker = Worker(store, {"nap": nap}, processor, settings, 2, clock)
    runs = [f"nap-{i}" for i in range(60)]
    for run_id in runs:
        store.start_run(NewRun(run_id, "nap", None, None, 0, 1.0, None, None, clock.now()))
    worker.start()
    try:
        eventually(lambda: len(_started) >= 4)
        store.open.clear()
        time.sleep(1.5)  # longer than the dispatcher's fallback poll: it found free slots and claims too
        store.open.set()
        eventually(lambda: all(store.get(r, None)[0].status in TERMINAL for r in runs), timeout=30)
    finally:
        worker.stop(timeout=3)
        caller.close()
    assert store.most_held <= 2
    waits = {r: round(_started[r] - store.claimed_at[r], 3) for r in runs}
    assert max(waits.values()) < 0.5, sorted(waits.items(), key=lambda kv: -kv[1])[:5]


# -- when the dispatcher reads the next due time ---------------------------------------------------------

T = pendulum.datetime(2024, 1, 1, tz="UTC")


@pytest.mark.parametrize(
    ("due", "found_work", "expected"),
    [
        (None, False, FALLBACK_POLL),  # nothing scheduled: the fallback poll
        (None, True, SETTLE),  # work found: claim again soon, next_due read then
        (T.add(seconds=0.3), False, 0.3),
        (T.add(seconds=0.3), True, SETTLE),  # a known timer later than the settle wait
        (T.add(seconds=0.02), True, 0.02),  # a known timer sooner: not overslept
        (T.add(seconds=5), False, FALLBACK_POLL),
        (T.subtract(seconds=1), False, 0.0),  # overdue: claim at once
        (T.subtract(seconds=1), True, 0.0),
    ],
)
def test_idle_timeout(due: pendulum.DateTime | None, found_work: bool, expected: float) -> None:
    assert idle_timeout(due, T, found_work) == pytest.approx(expected)


class DispatcherCalls(MemoryStore):
    """Notes the dispatcher thread's claims (with how many runs each found) and next_due reads."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def _note(self, call: str) -> None:
        if threading.current_thread().name == "pgflow-dispatcher":
            self.calls.append(call)

    def claim(self, *args: Any, **kwargs: Any) -> list[Claimed]:
        found = super().claim(*args, **kwargs)
        self._note(f"claim:{len(found)}")
        return found

    def next_due(self, *args: Any, **kwargs: Any) -> Any:
        self._note("next_due")
        return super().next_due(*args, **kwargs)


def test_after_a_claim_that_found_work_the_dispatcher_claims_again_before_reading_next_due() -> None:
    """A claim that found work is followed by another claim (after a wake-up or SETTLE), never by a
    next_due read: the runs it claimed are starting, and a read then competed with them for the CPU.
    A claim that found nothing is followed by a next_due read, which bounds the idle sleep."""
    store, clock = DispatcherCalls(), SystemClock()
    settings = Settings(pendulum.duration(seconds=30), pendulum.duration(seconds=1))
    caller = StepCaller()
    processor = RunProcessor(store, {"double": double}, clock, settings, caller)
    worker = Worker(store, {"double": double}, processor, settings, 4, clock)
    worker.start()
    try:
        for i in range(5):
            store.start_run(NewRun(f"d{i}", "double", None, i, 0, 1.0, None, None, clock.now()))
            eventually(lambda i=i: store.get(f"d{i}", None)[0].status == RunStatus.COMPLETED)
        time.sleep(2 * SETTLE)
    finally:
        worker.stop(timeout=3)
        caller.close()
    calls = list(store.calls)
    found = [i for i, call in enumerate(calls) if call.startswith("claim:") and call != "claim:0"]
    assert len(found) >= 1, calls
    for i in found:
        assert calls[i + 1].startswith("claim:"), calls  # then a claim, not a next_due read
    empty = [i for i, call in enumerate(calls[:-1]) if call == "claim:0"]
    assert empty and all(calls[i + 1] == "next_due" for i in empty), calls
