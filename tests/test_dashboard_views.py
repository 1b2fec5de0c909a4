"""The dashboard's pure parts: the timeline's durations and bars, which actions fit a run, how
values read, and the adapter that calls sync and async clients alike."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pendulum
import pytest

from pgflow import RunStatus, StepRecord, Waiting, WorkflowRun
from pgflow.dashboard.adapter import ClientAdapter
from pgflow.dashboard.formatting import clock, duration, pretty_json, short_id, when
from pgflow.dashboard.runview import available_actions
from pgflow.dashboard.timeline import MIN_WIDTH, build_timeline

T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


def at(seconds: float) -> pendulum.DateTime:
    return T0 + pendulum.duration(seconds=seconds)


def step(step_id: str, status: str, start: float, end: float | None, kind: str = "run") -> StepRecord:
    return StepRecord(step_id, kind, status, attempts=1, started_at=at(start),
                      completed_at=at(end) if end is not None else None)  # fmt: skip


def run_of(*steps: StepRecord, status: str = "completed", end: float | None = 10, **kw: Any) -> WorkflowRun:
    return WorkflowRun(
        id="r1", workflow_id="wf", resource_id=None, status=RunStatus(status), input=None, output=None,
        error=None, current_step_id=None, timeline={s.step_id: s for s in steps}, waiting=kw.get("waiting"),
        wake_at=None, held=kw.get("held", False), retry_count=0, max_retries=0, idempotency_key=None,
        created_at=T0, updated_at=at(end or 0), paused_at=None, resumed_at=None,
        completed_at=at(end) if end is not None else None, timeout_at=None,
    )  # fmt: skip


# -- timeline -------------------------------------------------------------------------------------------


def test_bars_are_proportional_to_durations_on_the_run_axis() -> None:
    """A 10 s run: a step from 0–2 s is a bar at 0 % of 20 % width; one from 5–10 s at 50 %, 50 % wide."""
    tl = build_timeline(run_of(step("a", "completed", 0, 2), step("b", "completed", 5, 10)), at(99))
    a, b = tl.rows
    assert (a.bar.start, a.bar.width, a.seconds) == (0.0, 20.0, 2.0)
    assert (b.bar.start, b.bar.width, b.seconds) == (50.0, 50.0, 5.0)
    assert tl.seconds == 10 and not tl.ongoing and [r.number for r in tl.rows] == [1, 2]


def test_an_instant_step_still_shows_a_sliver() -> None:
    """A step of zero duration gets the minimum width, and never runs past the axis."""
    tl = build_timeline(run_of(step("a", "completed", 10, 10)), at(10))
    (row,) = tl.rows
    assert row.bar.width == MIN_WIDTH and row.bar.start + row.bar.width <= 100


def test_a_waiting_step_grows_until_now() -> None:
    """While the run lives, the axis ends now and a waiting step's bar reaches it."""
    run = run_of(
        step("a", "completed", 0, 1), step("w", "waiting", 1, None, "wait_for"), status="paused", end=None
    )
    tl = build_timeline(run, at(4))
    assert tl.ongoing and tl.end == at(4)
    waiting = tl.rows[1]
    assert waiting.ongoing and waiting.seconds == 3 and waiting.bar.start == 25 and waiting.bar.width == 75
    assert waiting.state == "waiting" and not tl.rows[0].ongoing


def test_a_running_step_is_its_own_state() -> None:
    """A step record with status running (SPEC §13) is drawn as running and counts until now."""
    run = run_of(step("a", "running", 2, None), status="running", end=None)
    (row,) = build_timeline(run, at(6)).rows
    assert row.state == "running" and row.ongoing and row.seconds == 4


def test_the_axis_never_ends_before_a_recorded_time() -> None:
    """A clock behind the records (skew) does not draw bars past the axis."""
    run = run_of(step("a", "completed", 0, 8), status="running", end=None)
    tl = build_timeline(run, at(3))
    assert tl.end == at(8) and tl.rows[0].bar.width == 100


def test_a_run_without_steps_has_an_empty_timeline() -> None:
    """No step yet: no rows, an axis from creation to now."""
    tl = build_timeline(run_of(status="pending", end=None), at(2))
    assert tl.rows == () and tl.seconds == 2


# -- which actions fit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "held", "waiting", "expected"),
    [
        ("pending", False, None, {"event", "cancel", "pause"}),
        ("running", False, None, {"event", "cancel", "pause"}),
        ("paused", False, Waiting("w", "wait_for", "go"), {"event", "cancel", "pause", "fast-forward"}),
        ("paused", False, Waiting("p", "pause"), {"event", "cancel", "pause", "resume", "fast-forward"}),
        ("paused", True, None, {"event", "cancel", "resume", "fast-forward"}),
        ("completed", False, None, set()),
    ],
)
def test_available_actions(status: str, held: bool, waiting: Waiting | None, expected: set[str]) -> None:
    """Only the actions the run's state allows are offered."""
    run = attrs.evolve(run_of(status=status, end=None), held=held, waiting=waiting)
    assert available_actions(run, can_retry=True) == expected


@pytest.mark.parametrize(("status", "offered"), [("failed", True), ("cancelled", True), ("completed", False)])
def test_retry_is_offered_for_failed_and_cancelled_runs(status: str, offered: bool) -> None:
    """Retry is offered for failed and cancelled runs, and only when the client can retry."""
    run = run_of(status=status)
    assert ("retry" in available_actions(run, can_retry=True)) == offered
    assert available_actions(run, can_retry=False) == set()


# -- formatting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0, "0 ms"), (0.3504, "350 ms"), (4.25, "4.2 s"), (42.4, "42 s"), (184, "3 min 4 s"),
     (180, "3 min"), (7500, "2 h 5 min"), (3 * 86400 + 4 * 3600, "3 d 4 h"), (-1, "0 ms")],
)  # fmt: skip
def test_durations_read_at_a_sensible_precision(seconds: float | None, text: str) -> None:
    """Durations read as ms, s, min, h or d, whichever fits."""
    assert duration(seconds) == text


def test_times_ids_and_json_read_well() -> None:
    """Times to the second (steps to the ms), long ids shortened, JSON indented and cut when huge."""
    assert when(at(3.5)) == "2030-01-01 00:00:03" and when(None) == "—"
    assert clock(at(3.25)) == "00:00:03.250"
    assert short_id("0123456789abcdef") == "01234567…" and short_id("short") == "short"
    assert pretty_json({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}'
    assert pretty_json("x" * 30_000).endswith("more characters)")


# -- the adapter ----------------------------------------------------------------------------------------


class _Sync:
    def get(self, x: int, *, y: int = 0) -> int:
        return x + y


class _Async:
    clock = type("C", (), {"now": staticmethod(lambda: at(7))})()

    async def get(self, x: int, *, y: int = 0) -> int:
        return x * 10 + y


def test_the_adapter_calls_sync_and_async_clients_alike() -> None:
    """One call path: a sync method runs in the thread pool, a coroutine is awaited."""
    assert asyncio.run(ClientAdapter(_Sync()).call("get", 1, y=2)) == 3
    assert asyncio.run(ClientAdapter(_Async()).call("get", 1, y=2)) == 12
    assert ClientAdapter(_Sync()).has("get") and not ClientAdapter(_Sync()).has("retry_workflow")


def test_the_adapter_uses_the_client_clock_when_it_has_one() -> None:
    """A client with a clock (Engine, Harness) gives the page its time; others the system clock."""
    assert ClientAdapter(_Async()).now() == at(7)
    assert abs((ClientAdapter(_Sync()).now() - pendulum.now("UTC")).total_seconds()) < 5
