"""The interpreter on its own (SPEC §2, §3, §5, §13): ``Replayer`` on hand-built histories.

No store, no clock, no worker: each test writes the history a run would have (the records below),
calls ``Replayer(workflow, ReplayInput(...), history).decide(now, mailbox)`` and states the exact
``Decision`` — what to execute (with the ``running`` record written before the step's code starts),
where to suspend, what the run ends with — and the records the interpreter settles by itself.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Callable, Generator
from decimal import Decimal
from typing import Any

import attrs
import pendulum
import pytest

import pgflow
from pgflow import (
    All,
    Child,
    Delay,
    Pause,
    Poll,
    PollResult,
    Retry,
    Run,
    StepFailedError,
    Transaction,
    WaitFor,
    WaitUntil,
    workflow,
)
from pgflow.records import Event, RunError, StepRecord, Waiting
from pgflow.replay import Complete, Decision, Execute, Fail, Replayer, ReplayInput, Suspend

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
NOW = T0.add(minutes=10)
HOUR = pendulum.duration(hours=1)
END_OF_TIME = pendulum.datetime(9999, 12, 31, 23, 59, 59, tz="UTC")  # the last representable second


@attrs.frozen
class Money:
    amount: Decimal
    currency: str


def noop() -> int:
    return 1


def price() -> Money:
    return Money(Decimal("1.50"), "EUR")


@workflow("core-child")
def kid(ctx: Any) -> Flow:
    yield Run("k", noop)


# -- the history builder ----------------------------------------------------------------------------


def step(
    step_id: str, kind: str = "run", status: str = "completed", seq: int = 1, **fields: Any
) -> StepRecord:
    """A recorded step as a worker stores it: started at T0 by run attempt 0; a step that runs code
    (run, poll, transaction, child) has one attempt; a completed step completed at T0."""
    defaults: dict[str, Any] = {"started_at": T0, "seq": seq}
    if kind in ("run", "poll", "transaction", "child"):
        defaults["attempts"] = 1
    if status == "completed":
        defaults["completed_at"] = T0
    return StepRecord(step_id, kind, status, **{**defaults, **fields})


def replayer(wf: pgflow.Workflow, *records: StepRecord, attempt: int = 0, **options: Any) -> Replayer:
    run = ReplayInput("run-1", wf.id, None, attempt, None, **options)
    return Replayer(wf, run, {rec.step_id: rec for rec in records})


def decide(
    wf: pgflow.Workflow,
    *records: StepRecord,
    now: pendulum.DateTime = NOW,
    mailbox: tuple[Event, ...] = (),
    attempt: int = 0,
    **options: Any,
) -> Decision:
    """The decision a worker gets for a run of ``wf`` with these records, at ``now``."""
    return replayer(wf, *records, attempt=attempt, **options).decide(now, mailbox)


def after_one_step(cmd: Any) -> pgflow.Workflow:
    """A workflow that runs step ``a``, then yields ``cmd`` and returns what it yields back."""

    @workflow("core-then")
    def wf(ctx: Any) -> Flow:
        yield Run("a", noop)
        return (yield cmd)

    return wf


def yielding(cmd: Any) -> pgflow.Workflow:
    """A workflow that yields ``cmd`` and returns what it yields back."""

    @workflow("core-one")
    def wf(ctx: Any) -> Flow:
        return (yield cmd)

    return wf


def failure(decision: Decision) -> tuple[RunError, bool]:
    assert isinstance(decision.action, Fail), decision.action
    return decision.action.error, decision.action.retryable


A_DONE = step("a", output=1)


# ================================================================ a step reached for the first time

RUN = Run("r", noop)
POLL = Poll("q", noop, interval="1m", timeout="1h")
CHILD = Child("c", kid)
TX = Transaction("t", noop)


@pytest.mark.parametrize(
    ("cmd", "writes", "action"),
    [
        pytest.param(WaitFor("w", "go", timeout="1h"),
                     (StepRecord("w", "wait_for", "waiting", started_at=NOW, timeout_at=NOW + HOUR, event="go",
                                 run_attempt=2, seq=2),),
                     Suspend(Waiting("w", "wait_for", "go", NOW + HOUR), NOW + HOUR), id="wait_for-with-timeout"),
        pytest.param(WaitFor("w", "go"),
                     (StepRecord("w", "wait_for", "waiting", started_at=NOW, event="go", run_attempt=2, seq=2),),
                     Suspend(Waiting("w", "wait_for", "go"), None), id="wait_for"),
        pytest.param(Delay("d", "1h"),
                     (StepRecord("d", "delay", "waiting", started_at=NOW, wake_at=NOW + HOUR, run_attempt=2, seq=2),),
                     Suspend(Waiting("d", "delay", None, NOW + HOUR), NOW + HOUR), id="delay"),
        pytest.param(WaitUntil("u", NOW + HOUR),
                     (StepRecord("u", "wait_until", "waiting", started_at=NOW, wake_at=NOW + HOUR, run_attempt=2,
                                 seq=2),),
                     Suspend(Waiting("u", "wait_until", None, NOW + HOUR), NOW + HOUR), id="wait_until"),
        pytest.param(Pause("p"), (StepRecord("p", "pause", "waiting", started_at=NOW, run_attempt=2, seq=2),),
                     Suspend(Waiting("p", "pause"), None), id="pause"),
        pytest.param(RUN, (),
                     Execute(((RUN, StepRecord("r", "run", "running", attempts=1, started_at=NOW, run_attempt=2,
                                               seq=2)),)), id="run"),
        pytest.param(CHILD, (),
                     Execute(((CHILD, StepRecord("c", "child", "running", attempts=1, started_at=NOW, run_attempt=2,
                                                 seq=2)),)), id="child"),
    ],
)  # fmt: skip
def test_a_step_reached_for_the_first_time(cmd: Any, writes: tuple[StepRecord, ...], action: Any) -> None:
    """A new step gets the next seq, the run attempt that reached it and ``started_at = now``: a wait
    is recorded ``waiting`` (with its wake-up time or deadline) and suspends the run there; a step
    with code is executed, its ``running`` record going with the decision."""
    decision = decide(after_one_step(cmd), A_DONE, attempt=2)
    assert decision == Decision(action, writes)


def test_the_waits_of_an_all_are_numbered_in_argument_order() -> None:
    """SPEC §14: steps of an All reached together get consecutive seqs in argument order."""
    group = All(Delay("d", "1h"), WaitFor("w", "go"), Pause("p"))
    writes = decide(after_one_step(group), A_DONE).writes
    assert [(rec.step_id, rec.seq) for rec in writes] == [("d", 2), ("w", 3), ("p", 4)]


def test_a_poll_reached_for_the_first_time_is_called_at_once_with_its_deadline() -> None:
    """A Poll is called when first reached: its running record carries the deadline (now + timeout)."""
    action = decide(after_one_step(POLL), A_DONE, attempt=2).action
    running = StepRecord("q", "poll", "running", attempts=1, started_at=NOW, timeout_at=NOW + HOUR, run_attempt=2,
                         seq=2)  # fmt: skip
    assert action == Execute(((POLL, running),))


def test_a_transaction_reached_for_the_first_time_is_executed_where_supported() -> None:
    """On a store with transactions, a Transaction step is executed like a Run."""
    action = decide(after_one_step(TX), A_DONE, supports_transactions=True).action
    assert action == Execute(
        ((TX, StepRecord("t", "transaction", "running", attempts=1, started_at=NOW, seq=2)),)
    )


def test_a_time_already_past_completes_the_step_at_once() -> None:
    """A WaitUntil in the past completes on first reach (one completed record), without suspending."""
    decision = decide(after_one_step(WaitUntil("u", T0)), A_DONE)
    done = StepRecord("u", "wait_until", "completed", started_at=NOW, completed_at=NOW, seq=2)
    assert decision == Decision(Complete(None), (done,))


# ========================================================================= a recorded step replayed


def test_a_recorded_wait_not_over_yet_suspends_again_and_writes_nothing() -> None:
    """Replaying a wait whose time has not come suspends at its recorded wake-up time / deadline."""
    rec = step("w", "wait_for", "waiting", seq=2, event="go", timeout_at=NOW + HOUR)
    decision = decide(after_one_step(WaitFor("w", "go", timeout="5m")), A_DONE, rec)
    assert decision == Decision(Suspend(Waiting("w", "wait_for", "go", NOW + HOUR), NOW + HOUR))


def test_a_poll_between_ticks_waits_for_its_next_tick_or_its_deadline() -> None:
    """A Poll whose last call said "not yet" waits until the next tick, or its deadline if earlier."""
    tick = NOW.add(seconds=30)
    rec = step("q", "poll", "waiting", seq=2, wake_at=tick, timeout_at=NOW + HOUR)
    assert decide(after_one_step(POLL), A_DONE, rec) == Decision(
        Suspend(Waiting("q", "poll", None, tick), tick)
    )
    rec = step("q", "poll", "waiting", seq=2, wake_at=NOW + HOUR, timeout_at=NOW.add(minutes=5))
    deadline = NOW.add(minutes=5)
    assert decide(after_one_step(POLL), A_DONE, rec) == Decision(
        Suspend(Waiting("q", "poll", None, deadline), deadline)
    )


def test_a_started_child_is_waited_for_and_never_started_again() -> None:
    """A Child step whose child run was started (record waiting) suspends until the child ends."""
    rec = step("c", "child", "waiting", seq=2, output={"child_run_id": "k-1"})
    assert decide(after_one_step(CHILD), A_DONE, rec) == Decision(Suspend(Waiting("c", "child"), None))


@pytest.mark.parametrize(
    ("cmd", "kind", "options"),
    [
        pytest.param(RUN, "run", {}, id="run"),
        pytest.param(CHILD, "child", {}, id="child"),
        pytest.param(TX, "transaction", {"supports_transactions": True}, id="transaction"),
    ],
)
def test_a_step_left_running_by_a_crashed_worker_executes_again(cmd: Any, kind: str, options: Any) -> None:
    """SPEC §13: a record left ``running`` is taken over: the step executes again, ``attempts``
    counts on, ``started_at`` and ``seq`` stay the step's first ones; ``interrupted`` counts the
    attempt cut short (a ``Retry`` does not count it)."""
    rec = step(cmd.step_id, kind, "running", seq=2)
    action = decide(after_one_step(cmd), A_DONE, rec, attempt=1, **options).action
    again = StepRecord(
        cmd.step_id, kind, "running", attempts=2, started_at=T0, run_attempt=1, seq=2, interrupted=1
    )
    assert action == Execute(((cmd, again),))


def test_a_step_that_failed_in_an_earlier_run_attempt_keeps_its_place() -> None:
    """SPEC §5/§14: a failure recorded by an earlier run attempt is executed afresh (its step retries
    start over) at its old seq; a step never reached before is numbered after every recorded step."""
    a, c = Run("a", noop), Run("c", noop)

    @workflow("core-retry-place")
    def wf(ctx: Any) -> Flow:
        yield Run("b", noop)
        yield All(a, c)

    b = step("b", seq=1, output=1)
    a_failed = step("a", "run", "failed", seq=2, error=RunError("ValueError", "boom"), completed_at=T0)
    action = decide(wf, b, a_failed, attempt=1).action
    assert isinstance(action, Execute)
    assert [(cmd.step_id, rec.seq, rec.attempts) for cmd, rec in action.steps] == [("a", 2, 1), ("c", 3, 1)]


# ================================================================== waits that end while replaying


def test_a_timer_that_fired_is_completed_on_replay() -> None:
    """A Delay whose wake-up time has passed is recorded completed at ``now`` and yields None."""
    rec = step("d", "delay", "waiting", seq=2, wake_at=NOW.subtract(seconds=1))
    decision = decide(after_one_step(Delay("d", "1h")), A_DONE, rec)
    done = attrs.evolve(rec, status="completed", completed_at=NOW, wake_at=None)
    assert decision == Decision(Complete(None), (done,))


def test_an_event_in_the_mailbox_completes_the_wait() -> None:
    """A WaitFor takes its event from the mailbox: recorded completed with the data, event consumed."""
    rec = step("w", "wait_for", "waiting", seq=2, event="go", timeout_at=NOW + HOUR)
    mailbox = (Event(7, "other", {}, T0), Event(8, "go", {"n": 1}, T0))
    decision = decide(after_one_step(WaitFor("w", "go", timeout="1h")), A_DONE, rec, mailbox=mailbox)
    done = attrs.evolve(rec, status="completed", output={"n": 1}, completed_at=NOW)
    assert decision == Decision(Complete({"n": 1}), (done,), ((8, "w"),))


def test_an_event_sent_before_the_deadline_wins_even_when_listed_after_a_late_one() -> None:
    """Each event is judged by when it was sent: one sent before the deadline is taken even if an
    event sent after the deadline comes first in the mailbox (clients whose clocks differ)."""
    deadline = NOW.subtract(minutes=1)
    rec = step("w", "wait_for", "waiting", seq=2, event="go", timeout_at=deadline)
    mailbox = (Event(1, "go", {"late": True}, deadline), Event(2, "go", {"late": False}, T0))
    decision = decide(after_one_step(WaitFor("w", "go", timeout="1h")), A_DONE, rec, mailbox=mailbox)
    assert decision.action == Complete({"late": False}) and decision.consumed == ((2, "w"),)


def test_a_wait_past_its_deadline_times_out() -> None:
    """A WaitFor at its deadline yields None and is recorded completed and timed out at ``now``."""
    rec = step("w", "wait_for", "waiting", seq=2, event="go", timeout_at=NOW)
    decision = decide(after_one_step(WaitFor("w", "go", timeout="1h")), A_DONE, rec)
    done = attrs.evolve(rec, status="completed", timed_out=True, completed_at=NOW)
    assert decision == Decision(Complete(None), (done,))


def test_a_poll_past_its_deadline_times_out() -> None:
    """A Poll at its deadline yields ``PollResult(timed_out=True, data=None)``."""

    @workflow("core-poll-timeout")
    def wf(ctx: Any) -> Flow:
        result = yield POLL
        return [result.timed_out, result.data, result == PollResult(True)]

    rec = step("q", "poll", "waiting", seq=1, wake_at=NOW + HOUR, timeout_at=NOW)
    decision = decide(wf, rec)
    assert decision.action == Complete([True, None, True])
    assert decision.writes == (
        attrs.evolve(rec, status="completed", timed_out=True, completed_at=NOW, wake_at=None),
    )


def test_an_event_rejected_by_the_schema_is_logged_and_left_in_the_mailbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Event data failing the WaitFor's schema is not consumed; a warning names the run, the event
    (name and id), the step and what was wrong."""

    @attrs.frozen
    class Order:
        order_id: int

    rec = step("w", "wait_for", "waiting", seq=2, event="go")
    with caplog.at_level(logging.WARNING, logger="pgflow.replay"):
        decision = decide(after_one_step(WaitFor("w", "go", schema=Order)), A_DONE, rec,
                          mailbox=(Event(3, "go", {"order_id": "x"}, T0),))  # fmt: skip
    assert decision == Decision(Suspend(Waiting("w", "wait_for", "go"), None))
    [message] = [r.getMessage() for r in caplog.records if r.name == "pgflow.replay"]
    assert message.startswith("run run-1: event 'go' (#3) rejected by the schema of step 'w': ")
    assert "data of event 'go'" in message and "order_id" in message


# ========================================================================== failures thrown back in


def caught(cmd: Any) -> pgflow.Workflow:
    """A workflow that catches the failure of ``cmd`` and returns what it saw."""

    @workflow("core-caught")
    def wf(ctx: Any) -> Flow:
        try:
            yield cmd
        except StepFailedError as exc:
            return [type(exc).__name__, exc.step_id, exc.error_type, exc.message, exc.attempts]
        return None

    return wf


def test_a_failed_child_run_is_thrown_in_as_child_failed_error() -> None:
    """A Child step whose child run failed throws ChildFailedError (one attempt) at its ``yield``."""
    rec = step("c", "child", "failed", error=RunError("ChildFailedError", "child run k failed", None, "c"))
    decision = decide(caught(CHILD), rec)
    assert decision.action == Complete(["ChildFailedError", "c", "ChildFailedError", "child run k failed", 1])


def test_a_child_that_could_not_start_is_an_ordinary_step_failure() -> None:
    """A Child step that failed before its child run existed (e.g. bad input) throws a
    StepFailedError naming the original error, not a ChildFailedError."""
    rec = step("c", "child", "failed", error=RunError("InvalidInputError", "bad input", None, "c"))
    decision = decide(caught(CHILD), rec)
    assert decision.action == Complete(["StepFailedError", "c", "InvalidInputError", "bad input", 1])


# ============================================================================ runs that fail at once


@workflow("core-unstorable")
def unstorable(ctx: Any) -> Flow:
    yield Run("a", noop)
    return object()


@workflow("core-twice")
def twice(ctx: Any) -> Flow:
    for _ in range(2):
        yield Run("a", noop)  # the same id twice, which only running the code can see


@workflow("core-changed-kind")
def changed_kind(ctx: Any) -> Flow:
    yield Delay("a", "1h")


@workflow("core-changed-event")
def changed_event(ctx: Any) -> Flow:
    yield WaitFor("w", "stop")


@workflow("core-fast-poll")
def fast_poll(ctx: Any) -> Flow:
    yield Run("a", noop)
    yield Poll("q", noop, interval="100ms")


@workflow("core-annotated")
def annotated(ctx: Any) -> Flow:
    yield Run("a", price)


@workflow("core-tx")
def in_a_transaction(ctx: Any) -> Flow:
    yield TX


@dataclasses.dataclass(frozen=True)
class Shipment:
    tracking: str


@workflow("core-new-schema")
def new_schema(ctx: Any) -> Flow:
    yield WaitFor("w", "go", schema=Shipment)


@pytest.mark.parametrize(
    ("wf", "records", "error_type", "step_id", "names"),
    [
        pytest.param(unstorable, [A_DONE], "SerializationError", None, ["run-1", "'core-unstorable'", "output"],
                     id="unstorable-output"),
        pytest.param(twice, [A_DONE], "DuplicateStepError", "a", ["run-1", "'a'", "twice"], id="duplicate-step-id"),
        pytest.param(changed_kind, [A_DONE], "NonDeterminismError", "a", ["run-1", "'a'", "run", "delay"],
                     id="changed-kind"),
        pytest.param(changed_event, [step("w", "wait_for", "waiting", event="go")], "NonDeterminismError", "w",
                     ["run-1", "'w'", "'go'", "'stop'"], id="changed-event"),
        pytest.param(fast_poll, [A_DONE], "WorkflowDefinitionError", "q", ["'core-fast-poll'", "run-1", "'q'",
                     "min_poll_interval"], id="poll-interval-below-minimum"),
        pytest.param(annotated, [step("a", output="not money")], "SerializationError", "a", ["'a'", "run-1"],
                     id="recorded-value-does-not-fit-the-annotation"),
        pytest.param(in_a_transaction, [], "UnsupportedError", "t", ["'t'", "run-1", "Postgres"],
                     id="transaction-without-support"),
        pytest.param(new_schema, [step("w", "wait_for", event="go", output={"order": 1})], "SerializationError", "w",
                     ["'w'", "run-1", "data of event 'go'"], id="recorded-event-does-not-fit-a-changed-schema"),
    ],
)  # fmt: skip
def test_a_broken_rule_fails_the_run_at_once(
    wf: pgflow.Workflow, records: list[StepRecord], error_type: str, step_id: str | None, names: list[str]
) -> None:
    """SPEC §5: these failures are not retried; the error names its class, the step where it
    happened, and its message names the run (and the step, workflow or event it is about)."""
    error, retryable = failure(decide(wf, *records))
    assert (error.type, error.step_id, retryable) == (error_type, step_id, False)
    assert all(name in error.message for name in names), error.message
    assert "None" not in error.message  # nothing described as None (a kind without an event, say)


# =================================================================== times past year 9999 (§13)

NEAR_THE_END = END_OF_TIME.subtract(days=30)


@pytest.mark.parametrize(
    ("cmd", "what"),
    [
        pytest.param(Delay("d", "60 days"), "Delay duration", id="delay"),
        pytest.param(WaitFor("w", "go", timeout="60 days"), "WaitFor timeout", id="wait_for-timeout"),
        pytest.param(Poll("q", noop, interval="60 days"), "Poll interval", id="poll-interval"),
        pytest.param(Poll("q", noop, interval="1m", timeout="60 days"), "Poll timeout", id="poll-timeout"),
        pytest.param(
            Run("r", noop, retry=Retry(max_delay="60 days")), "Retry.max_delay", id="retry-max-delay"
        ),
    ],
)
def test_a_time_past_year_9999_fails_the_run_naming_the_argument(cmd: Any, what: str) -> None:
    """SPEC §13: a wake-up time, deadline or retry that would fall past year 9999 fails the run at once
    (WorkflowDefinitionError, not retried) naming the step and the argument, and runs nothing."""
    error, retryable = failure(decide(yielding(cmd), now=NEAR_THE_END))
    assert (error.type, error.step_id, retryable) == ("WorkflowDefinitionError", cmd.step_id, False)
    assert f"{what} of " in error.message and "run-1" in error.message


@pytest.mark.parametrize(
    ("days_left", "executes"),
    [
        pytest.param(20, True, id="longest-backoff-fits"),
        pytest.param(12, False, id="longest-backoff-does-not-fit"),
    ],
)
def test_a_retried_step_needs_room_for_its_longest_jittered_backoff(days_left: int, executes: bool) -> None:
    """A Run whose longest backoff (``max_delay × (1 + jitter)``, here 15 days) would end past year
    9999 fails before its code runs; with room for it, it executes."""
    cmd = Run("r", noop, retry=Retry(max_delay="10 days", jitter=0.5))
    action = decide(yielding(cmd), now=END_OF_TIME.subtract(days=days_left)).action
    assert isinstance(action, Execute if executes else Fail)


# ========================================================================== the Replayer's lifetime


def test_a_decided_replayer_keeps_its_decision() -> None:
    """Once a run's outcome is decided, asking again gives the same decision (its code does not run again)."""
    calls: list[str] = []

    @workflow("core-decided")
    def wf(ctx: Any) -> Flow:
        calls.append("ran")
        yield Run("a", noop)
        return "done"

    r = replayer(wf, A_DONE)
    first = r.decide(NOW)
    assert first == Decision(Complete("done"))
    assert r.decide(NOW.add(hours=1)) == Decision(Complete("done")) and calls == ["ran"]


def test_cleanup_code_after_the_outcome_is_not_replaying(caplog: pytest.LogCaptureFixture) -> None:
    """When a run fails at once at a new step, its ``finally`` blocks (run when the generator is
    discarded) are new code: ``ctx.is_replaying`` is false there and ``ctx.logger`` logs."""
    seen: list[bool] = []

    @workflow("core-cleanup-logs")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        try:
            yield Run("a", noop)
            yield Poll("q", noop, interval="100ms")  # below min_poll_interval: fails the run at once
        finally:
            seen.append(ctx.is_replaying)
            ctx.logger.warning("cleaning up")

    r = replayer(wf, A_DONE)
    assert isinstance(r.decide(NOW).action, Fail)
    with caplog.at_level(logging.WARNING, logger="pgflow.workflow.core-cleanup-logs"):
        r.close()
    assert seen == [False]
    assert [
        rec.getMessage() for rec in caplog.records if rec.name == "pgflow.workflow.core-cleanup-logs"
    ] == ["cleaning up"]


def test_cleanup_code_raising_when_the_generator_is_discarded_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``close()`` runs the workflow's ``finally`` blocks; an exception there is logged as a warning
    naming the run and the exception, never raised (the run's outcome is decided already)."""

    @workflow("core-cleanup")
    def wf(ctx: Any) -> Flow:
        try:
            yield Delay("d", "1h")
        finally:
            raise RuntimeError("cleanup failed")

    r = replayer(wf)
    assert isinstance(r.decide(NOW).action, Suspend)
    with caplog.at_level(logging.WARNING, logger="pgflow.replay"):
        r.close()
    assert [(rec.levelno, rec.getMessage()) for rec in caplog.records if rec.name == "pgflow.replay"] == [
        (
            logging.WARNING,
            "run run-1: the workflow's cleanup code raised RuntimeError('cleanup failed') when its generator was closed",
        )
    ]


# ============================================================ values rebuilt from step return types


@dataclasses.dataclass
class PriceLookup:
    """A configured callable object; a (non-frozen) dataclass, so it cannot be hashed."""

    currency: str

    def __call__(self) -> Money:
        return Money(Decimal("1.50"), self.currency)


def test_a_callable_object_that_cannot_be_hashed_gets_its_result_rebuilt() -> None:
    """A step function that is an unhashable callable object still has its recorded result rebuilt
    through its ``__call__`` return annotation."""
    seen: list[Any] = []
    lookup = PriceLookup("EUR")

    @workflow("core-callable")
    def wf(ctx: Any) -> Flow:
        seen.append((yield Run("p", lookup)))

    decision = decide(wf, step("p", output={"amount": "1.50", "currency": "EUR"}))
    assert decision.action == Complete(None)
    assert seen == [Money(Decimal("1.50"), "EUR")]


@pytest.mark.parametrize("wrap", [lambda fn: fn, functools.partial], ids=["function", "partial"])
def test_a_return_annotation_that_resolves_later_is_used_once_it_does(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Callable[[], Any]], Callable[[], Any]]
) -> None:
    """A return annotation that cannot be resolved yet (the class is defined later, e.g. a circular
    import) gives the plain JSON value; once it resolves, later replays rebuild the class (also
    through a ``functools.partial``)."""
    seen: list[Any] = []

    def late_bound() -> CoreLateValue:  # type: ignore[name-defined]  # noqa: F821 - the test defines it
        raise AssertionError("never executed: its result is recorded")

    fn = wrap(late_bound)

    @workflow("core-late-annotation")
    def wf(ctx: Any) -> Flow:
        seen.append((yield Run("v", fn)))

    rec = step("v", output={"amount": "2", "currency": "USD"})
    decide(wf, rec)
    monkeypatch.setattr(sys.modules[__name__], "CoreLateValue", Money, raising=False)
    decide(wf, rec)
    assert seen == [{"amount": "2", "currency": "USD"}, Money(Decimal("2"), "USD")]
