"""A crash does not use up a step's retries (SPEC §3, §13): the attempt it interrupted is run again
and counted in ``attempts``, but ``Retry`` counts the attempts that *failed*, so its budget and its
backoff schedule are those of the crash-free run — which is why the crashed run ends like it.

Regression: ``All(WaitFor(timeout=…), Run(failing, retry=Retry(max_attempts=2)))`` with a crash
after the ``WaitFor`` (found by ``tests/property/test_replay_properties.py``): the ``WaitFor``'s
record goes out in the statement that records the ``Run``'s start, the worker dies before calling
it, and the takeover counted that interrupted attempt against ``max_attempts``: the step failed for
good on its first real try, with no backoff. Where the crash-free run suspended for the backoff and
then waited for the event (the property's client sent one), the crashed run only waited for the
event, and the client's first move at that wait, "let it time out", ended it at the deadline: 0
events sent instead of 1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

import pendulum
import pytest

from pgflow import All, Retry, Run, WaitFor, workflow
from pgflow import step_records as records
from pgflow.replay import Execute, Replayer, ReplayInput
from pgflow.testing import Harness

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
TWO_TRIES = Retry(max_attempts=2, initial="2s", jitter=0)
THREE_TRIES = Retry(max_attempts=3, initial="2s", jitter=0)


def always_fails() -> None:
    raise ValueError("down")


# ====================================================================== the interpreter, no store


def test_an_interrupted_attempt_is_rerun_and_does_not_count_against_max_attempts() -> None:
    """Taking over a step left ``running``: the new attempt counts on (attempts 2) and remembers the
    interrupted one; when it fails, ``Retry(max_attempts=2)`` still allows the second real try,
    after the first backoff (2 s), as in the crash-free run."""

    @workflow("pure-takeover")
    def wf(ctx: Any) -> Flow:
        yield Run("s", always_fails, retry=TWO_TRIES)

    left_running = records.running("s", "run", None, T0, 1, 0)  # the crashed worker's last write
    replayer = Replayer(wf, ReplayInput("r1", "pure-takeover", None, 0, None), {"s": left_running})
    try:
        decision = replayer.decide(T0)
    finally:
        replayer.close()
    assert isinstance(decision.action, Execute)
    [(cmd, start)] = decision.action.steps
    assert (start.status, start.attempts, start.interrupted, start.started_at) == ("running", 2, 1, T0)

    now = T0.add(seconds=1)
    failed_once, fatal = records.run_outcome(cmd, start, None, ValueError("down"), now, "r1")
    assert fatal is None
    assert (failed_once.status, failed_once.attempts, failed_once.wake_at) == (
        "waiting",
        2,
        now.add(seconds=2),
    )

    # the next attempt is the step's second real try: its failure is final, after 2 failures
    second = records.running("s", "run", failed_once, now.add(seconds=2), 1, 0)
    assert (second.attempts, second.interrupted) == (3, 1)
    final, _ = records.run_outcome(cmd, second, None, ValueError("down"), now.add(seconds=3), "r1")
    assert (final.status, final.attempts) == ("failed", 3)


def test_a_step_that_never_ran_before_the_crash_gets_its_retry_backoff() -> None:
    """Every interruption is counted: two crashes, then a failure → backoff(1), not a final failure."""
    rec = records.running("s", "run", None, T0, 1, 0)
    rec = records.running("s", "run", rec, T0, 1, 0)  # first takeover, interrupted again
    rec = records.running("s", "run", rec, T0, 1, 0)  # second takeover
    assert (rec.attempts, rec.interrupted) == (3, 2)
    cmd = Run("s", always_fails, retry=TWO_TRIES)
    out, _ = records.run_outcome(cmd, rec, None, ValueError("down"), T0, "r1")
    assert (out.status, out.wake_at) == ("waiting", T0.add(seconds=2))


def test_a_retry_after_a_failure_is_not_an_interruption() -> None:
    """Only a record left ``running`` was interrupted; a retry after a backoff, or a poll tick, is not."""
    cmd = Run("s", always_fails, retry=THREE_TRIES)
    first = records.running("s", "run", None, T0, 1, 0)
    failed_once, _ = records.run_outcome(cmd, first, None, ValueError("down"), T0, "r1")
    again = records.running("s", "run", failed_once, T0.add(seconds=2), 1, 0)
    assert (again.attempts, again.interrupted) == (2, 0)
    failed_twice, _ = records.run_outcome(cmd, again, None, ValueError("down"), T0.add(seconds=2), "r1")
    assert failed_twice.wake_at == T0.add(seconds=6)  # backoff(2) = 4 s
    third = records.running("s", "run", failed_twice, T0.add(seconds=6), 1, 0)
    final, _ = records.run_outcome(cmd, third, None, ValueError("down"), T0.add(seconds=6), "r1")
    assert (final.status, final.attempts, final.interrupted) == ("failed", 3, 0)


# ===================================================================== the Harness, both stores


@pytest.fixture
def make_harness(harness_on_both_stores: Callable[..., Harness]) -> Callable[..., Harness]:
    return functools.partial(harness_on_both_stores, lease="1s")


@pytest.mark.parametrize("crash", [None, "after w", "before s"])
def test_all_of_a_timed_wait_and_a_failing_step_ends_alike_after_a_crash(
    make_harness: Any, crash: Any
) -> None:
    """The property's failing example, by hand: whether the worker dies right after the ``WaitFor``
    (and the ``Run``'s start) is recorded, or after ``fails`` ran unrecorded, the ``Run`` still
    fails twice with a 2 s backoff in between; the ``WaitFor`` still waits (so the event sent after
    the backoff is taken) and the run fails with the step's error, as without a crash."""
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise ValueError("down")

    @workflow("all-wait-fail")
    def wf(ctx: Any) -> Flow:
        return (yield All(WaitFor("w", "go", timeout="30s"), Run("s", fails, retry=TWO_TRIES)))

    h = make_harness(wf)
    if crash == "after w":
        h.crash_after("w")
    elif crash == "before s":
        h.crash_before("s")
    run = h.start_workflow(wf)
    h.run_until_idle()
    if crash is not None:
        assert h.get_run(run.id).status == "running"  # still leased by the dead worker
        h.advance("1s")  # the lease expires: another worker takes the run over
    waiting = h.get_run(run.id)
    assert waiting.status == "paused" and waiting.timeline["s"].status == "waiting"  # the backoff
    assert waiting.wake_at == waiting.timeline["s"].wake_at == h.clock.now().add(seconds=2)
    h.advance("2s")  # the backoff: the step's second try fails for good
    assert h.get_run(run.id).timeline["s"].status == "failed"
    h.trigger_event(run.id, "go", {"ok": True})
    done = h.run_until_complete(run.id)
    assert done.status == "failed" and done.error is not None
    assert (done.error.type, done.error.message, done.error.step_id) == ("ValueError", "down", "s")
    assert done.timeline["w"].output == {"ok": True} and not done.timeline["w"].timed_out
    assert done.timeline["s"].attempts == (2 if crash is None else 3)  # the interrupted attempt counts
    assert len(calls) == (3 if crash == "before s" else 2)  # crash_before: the lost call ran, unrecorded


@pytest.mark.parametrize("crash", [False, True])
def test_a_crash_does_not_use_up_a_transient_failures_retries(make_harness: Any, crash: bool) -> None:
    """A step that succeeds on its third call, with ``Retry(max_attempts=3)``: the run completes, also
    when the worker died right after the step before it was recorded (which records this step's start
    in the same statement, before its function is called)."""
    calls: list[int] = []

    def transient() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"call {len(calls)} failed")
        return "ok"

    @workflow("transient")
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: "a")
        return (yield Run("s", transient, retry=THREE_TRIES))

    h = make_harness(wf)
    if crash:
        h.crash_after("a")
    run = h.start_workflow(wf)
    done = h.run_until_complete(run.id)
    assert (done.status, done.output, len(calls)) == ("completed", "ok", 3)
    assert done.timeline["s"].attempts == (4 if crash else 3)
