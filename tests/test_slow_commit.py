"""A commit so slow that the lease may be running out does not start the step (SPEC §3: one worker
at a time). A commit leaves at least ``RENEW_BELOW`` of a lease counted from the time taken before it
(the engine's clock, passed to the store); a commit stuck waiting for a connection through a
database outage could come back with less than half a lease left, while another worker may claim
the run soon: the step starts only when the commit took less than ``RENEW_BELOW - 1/2`` of a lease."""

from __future__ import annotations

from typing import Any

import pendulum

from pgflow import Run, workflow
from pgflow.execution import StepCaller
from pgflow.memory import MemoryStore
from pgflow.processor import RunProcessor, Settings
from pgflow.testing import SimClock
from pgflow.transitions import RENEW_BELOW

LEASE = pendulum.duration(seconds=30)
TOO_SLOW = pendulum.duration(seconds=LEASE.total_seconds() * (RENEW_BELOW - 0.5))  # 7.5 s of 30
CALLS: list[str] = []


def charge(order: str) -> str:
    CALLS.append(order)
    return f"charged {order}"


@workflow("slow-commit")
def pay(ctx: Any) -> Any:
    return (yield Run("charge", charge, ctx.input))


class SlowCommits(MemoryStore):
    """Each commit takes ``delay`` of the clock's time (as waiting for a pool connection would)."""

    def __init__(self, clock: SimClock, delay: pendulum.Duration) -> None:
        super().__init__()
        self.clock, self.delay = clock, delay

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        result = super().commit(*args, **kwargs)
        if self.delay:
            self.clock.advance(self.delay)
        return result


def _process_once(store: MemoryStore, clock: SimClock) -> None:
    processor = RunProcessor(
        store, {pay.id: pay}, clock, Settings(LEASE, pendulum.duration(seconds=1)), StepCaller()
    )
    for claimed in store.claim("w1", [pay.id], clock.now(), LEASE, 10):
        processor.process(claimed)


def _start(store: MemoryStore, clock: SimClock) -> str:
    from pgflow.testing import Harness

    h = Harness([pay], clock=clock)
    h.store = store  # start through the public operations, on this store
    return h.start_workflow(pay, "o-1").id


def test_a_step_is_not_started_after_a_commit_that_left_less_than_half_the_lease() -> None:
    CALLS.clear()
    clock = SimClock("2025-01-01T00:00:00Z")
    store = SlowCommits(clock, TOO_SLOW)
    run_id = _start(store, clock)
    _process_once(store, clock)
    assert CALLS == []  # the running record was written, the step not started
    row, steps = store.get(run_id, None)
    assert row.status == "running" and steps[0].status == "running"
    store.delay = pendulum.duration(0)
    clock.advance(LEASE)  # the lease runs out: the run is taken over and its step runs once
    _process_once(store, clock)
    assert CALLS == ["o-1"]
    assert store.get(run_id, None)[0].status == "completed"


def test_a_quick_commit_starts_the_step_at_once() -> None:
    CALLS.clear()
    clock = SimClock("2025-01-01T00:00:00Z")
    store = SlowCommits(clock, TOO_SLOW - pendulum.duration(seconds=1))
    run_id = _start(store, clock)
    _process_once(store, clock)
    assert CALLS == ["o-1"] and store.get(run_id, None)[0].status == "completed"
