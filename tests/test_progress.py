"""``check_progress`` (SPEC §7): the test vectors and how the static step list is counted."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import All, Delay, Run, WaitFor, workflow
from pgflow.testing import Harness, SimClock

Flow = Generator[Any, Any, Any]


def fail() -> None:
    raise ValueError("nope")


@workflow("one-step")
def one_step(ctx: Any) -> Flow:
    yield Delay("only", "1h")


@workflow("two-steps")
def two_steps(ctx: Any) -> Flow:
    yield Run("first", lambda: 1)
    yield WaitFor("second", event="go")


@workflow("fails-first")
def fails_first(ctx: Any) -> Flow:
    yield Run("first", fail)
    yield Run("second", lambda: 2)


@workflow("early-exit")
def early_exit(ctx: Any) -> Flow:
    yield Run("a", lambda: 1)
    if ctx.input:
        return "short"
    yield Run("b", lambda: 2)
    yield Run("c", lambda: 3)


@workflow("looped")
def looped(ctx: Any) -> Flow:
    for i in range(4):
        yield Run(f"item-{i}", lambda: 1)
    yield All(Run("x", lambda: 1), Run("y", lambda: 2))


@workflow("three-steps")
def three_steps(ctx: Any) -> Flow:
    yield Run("a", lambda: 1)
    yield Delay("b", "1h")
    yield Delay("c", "1h")


@pytest.fixture
def h() -> Harness:
    """A harness with this module's workflows."""
    clock = SimClock(pendulum.datetime(2030, 1, 1, tz="UTC"))
    return Harness(workflows=[one_step, two_steps, fails_first, early_exit, looped, three_steps], clock=clock)


def test_fresh_one_step_run_is_zero(h: Harness) -> None:
    """A fresh 1-step run is 0 % (0/1)."""
    p = h.check_progress(h.start_workflow("one-step").id)
    assert (p.completion_percentage, p.completed_steps, p.total_steps) == (0.0, 0, 1)


def test_two_step_run_waiting_at_second_is_half(h: Harness) -> None:
    """A 2-step run waiting at step 2 is 50 % (1/2)."""
    run = h.start_workflow("two-steps")
    h.run_until_idle()
    p = h.check_progress(run.id)
    assert (p.completion_percentage, p.completed_steps, p.total_steps) == (50.0, 1, 2)
    assert p.status == "paused" and p.waiting is not None and p.waiting.step_id == "second"


def test_completed_run_is_hundred(h: Harness) -> None:
    """A completed run is 100 %."""
    run = h.start_workflow("two-steps")
    h.run_until_idle()
    h.trigger_event(run.id, "go")
    h.run_until_idle()
    p = h.check_progress(run.id)
    assert (p.completion_percentage, p.completed_steps, p.total_steps) == (100.0, 2, 2)


def test_failed_at_first_step_is_zero(h: Harness) -> None:
    """A run failed at its first step is 0 %."""
    run = h.run_until_complete(h.start_workflow("fails-first").id)
    assert run.status == "failed"
    p = h.check_progress(run.id)
    assert (p.completion_percentage, p.completed_steps, p.total_steps) == (0.0, 0, 2)


def test_early_return_is_hundred(h: Harness) -> None:
    """A run that returns early is 100 % although it completed fewer steps than listed."""
    run = h.run_until_complete(h.start_workflow("early-exit", True).id)
    p = h.check_progress(run.id)
    assert (p.completion_percentage, p.completed_steps, p.total_steps) == (100.0, 1, 3)


def test_percentage_has_two_decimals(h: Harness) -> None:
    """1 of 3 steps is 33.33 %."""
    run = h.start_workflow("three-steps")
    h.run_until_idle()
    assert h.check_progress(run.id).completion_percentage == 33.33


def test_loop_steps_are_capped_at_hundred(h: Harness) -> None:
    """A dynamic id inside a loop counts once statically; the percentage never exceeds 100."""
    assert [s.id for s in looped.steps][1:] == ["x", "y"] and looped.steps[0].dynamic
    run = h.start_workflow("looped")
    h.run_until_idle()
    p = h.check_progress(run.id)
    assert p.total_steps == 3 and p.completed_steps == 6 and p.completion_percentage == 100.0


def test_progress_carries_the_run_fields(h: Harness) -> None:
    """A Progress is the run's fields plus the progress numbers."""
    run = h.start_workflow("one-step")
    p = h.check_progress(run.id)
    assert isinstance(p, pgflow.Progress) and isinstance(p, pgflow.WorkflowRun)
    assert (p.id, p.workflow_id, p.status) == (run.id, "one-step", "pending")


def test_progress_unknown_run(h: Harness) -> None:
    """``check_progress`` on an unknown run raises RunNotFoundError."""
    with pytest.raises(pgflow.RunNotFoundError):
        h.check_progress("missing")
