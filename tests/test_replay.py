"""The replay core (SPEC §1–§3, §5): what each step command yields, records and replays, on the Harness."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Generator, Iterator
from decimal import Decimal
from typing import Any

import attrs
import pendulum
import pytest

import pgflow
from pgflow import (
    All,
    Delay,
    Pause,
    Poll,
    PollResult,
    Retry,
    Run,
    Sleep,
    StepFailedError,
    Transaction,
    WaitFor,
    WaitUntil,
    workflow,
)
from pgflow.replay import Complete, Execute, Fail, Replayer, ReplayInput, Suspend
from pgflow.testing import Harness, SimClock

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


@pytest.fixture
def clock() -> SimClock:
    """A simulated clock at a fixed, round start time."""
    return SimClock(T0)


def harness(clock: SimClock, *workflows: pgflow.Workflow, **kwargs: Any) -> Harness:
    return Harness(workflows=workflows, clock=clock, **kwargs)


def start(h: Harness, wf: pgflow.Workflow, input: Any = None, **kwargs: Any) -> str:
    run = h.start_workflow(wf, input, **kwargs)
    h.run_until_idle()
    return run.id


@attrs.frozen
class Money:
    amount: Decimal
    currency: str


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    qty: int


# ====================================================================================== Context


def test_context_carries_run_identity(clock: SimClock) -> None:
    """``ctx`` has the run id, workflow id, resource id, attempt 0 and the validated input."""
    seen: list[Any] = []

    @workflow("ctx-ids", input=Item)
    def wf(ctx: pgflow.Context[Item]) -> Flow:
        seen.append((ctx.run_id, ctx.workflow_id, ctx.resource_id, ctx.attempt, ctx.input))
        yield Run("s", lambda: 1)

    h = harness(clock, wf)
    run_id = start(h, wf, {"sku": "a", "qty": 2}, resource_id="tenant-1")
    assert seen == [(run_id, "ctx-ids", "tenant-1", 0, Item("a", 2))]


def test_context_attempt_counts_run_attempts(clock: SimClock) -> None:
    """``ctx.attempt`` is 0 on the first run attempt and N on the N-th retry."""
    attempts: list[int] = []

    @workflow("ctx-attempt", retries=2)
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        attempts.append(ctx.attempt)
        yield Run("s", lambda: 1)
        raise RuntimeError("boom")

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.run_until_complete(run_id).status == "failed"
    assert attempts == [0, 1, 2]


def test_is_replaying_true_during_replay_false_at_frontier(clock: SimClock) -> None:
    """``is_replaying`` is true while recorded outcomes are fed back, false at new code."""
    seen: list[tuple[str, bool]] = []

    @workflow("replaying")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        seen.append(("start", ctx.is_replaying))
        yield Run("a", lambda: 1)
        seen.append(("after-a", ctx.is_replaying))
        yield Delay("d", "1h")
        seen.append(("after-d", ctx.is_replaying))
        yield Run("b", lambda: 2)
        seen.append(("after-b", ctx.is_replaying))

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert seen == [("start", False), ("after-a", False)]
    seen.clear()
    h.advance("1h")
    assert h.get_run(run_id).status == "completed"
    assert seen == [("start", True), ("after-a", True), ("after-d", False), ("after-b", False)]


def test_logger_is_silent_while_replaying(clock: SimClock, caplog: pytest.LogCaptureFixture) -> None:
    """Every ``ctx.logger`` line is emitted exactly once across suspensions and replays."""

    @workflow("logging")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        ctx.logger.info("starting")
        yield Run("a", lambda: 1)
        ctx.logger.info("after a")
        yield Delay("d", "1h")
        ctx.logger.info("after delay")
        yield WaitFor("w", event="go")
        ctx.logger.warning("after event")

    h = harness(clock, wf)
    with caplog.at_level(logging.INFO, logger="pgflow.workflow"):
        run_id = start(h, wf)
        h.advance("1h")
        h.trigger_event(run_id, "go")
        h.run_until_idle()
    assert h.get_run(run_id).status == "completed"
    lines = [r.getMessage() for r in caplog.records if r.name == "pgflow.workflow.logging"]
    assert lines == ["starting", "after a", "after delay", "after event"]


def test_logger_records_carry_ids(clock: SimClock, caplog: pytest.LogCaptureFixture) -> None:
    """Log records carry ``run_id``, ``workflow_id`` and the current ``step_id``."""

    @workflow("logging-ids")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        yield Run("a", lambda: 1)
        ctx.logger.info("hello")

    h = harness(clock, wf)
    with caplog.at_level(logging.INFO, logger="pgflow.workflow"):
        run_id = start(h, wf)
    (rec,) = [r for r in caplog.records if r.getMessage() == "hello"]
    assert (rec.run_id, rec.workflow_id, rec.step_id) == (run_id, "logging-ids", "a")  # type: ignore[attr-defined]
    pgflow_ids = (rec.pgflow_run_id, rec.pgflow_workflow_id, rec.pgflow_step_id, rec.pgflow_attempt)  # type: ignore[attr-defined]
    assert pgflow_ids == (run_id, "logging-ids", "a", 1)


# ========================================================================================== Run


def test_run_sync_function_result_is_yielded(clock: SimClock) -> None:
    """A sync ``fn(*args)`` result is what the ``yield`` evaluates to."""

    @workflow("run-sync")
    def wf(ctx: Any) -> Flow:
        total = yield Run("add", lambda a, b: a + b, 2, 3)
        return total

    h = harness(clock, wf)
    assert h.run_until_complete(h.start_workflow(wf).id).output == 5


def test_run_async_function(clock: SimClock) -> None:
    """An ``async def`` step function is awaited."""

    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 10

    @workflow("run-async")
    def wf(ctx: Any) -> Flow:
        return (yield Run("fetch", fetch, 4))

    h = harness(clock, wf)
    assert h.run_until_complete(h.start_workflow(wf).id).output == 40


def test_run_result_round_tripped_through_return_annotation(clock: SimClock) -> None:
    """First execution and replay both see the round-tripped value, structured by ``-> Money``."""
    seen: list[Any] = []

    def price() -> Money:
        return Money(Decimal("9.99"), "EUR")

    @workflow("round-trip")
    def wf(ctx: Any) -> Flow:
        money = yield Run("price", price)
        seen.append(money)
        yield Delay("d", "1m")
        return {"amount": str(money.amount)}

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.advance("1m")
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == {"amount": "9.99"}
    assert seen == [Money(Decimal("9.99"), "EUR")] * 2
    assert all(type(m) is Money for m in seen)
    assert run.timeline["price"].output == {"amount": "9.99", "currency": "EUR"}


def test_run_unannotated_result_is_json_on_first_execution_too(clock: SimClock) -> None:
    """Without an annotation the workflow sees the JSON form, on first execution as on replay."""
    seen: list[Any] = []

    @workflow("round-trip-json")
    def wf(ctx: Any) -> Flow:
        value = yield Run("item", lambda: Item("x", 1))
        seen.append(value)
        yield Delay("d", "1m")

    h = harness(clock, wf)
    start(h, wf)
    h.advance("1m")
    assert seen == [{"sku": "x", "qty": 1}, {"sku": "x", "qty": 1}]


def test_run_unserialisable_result_fails_without_retry(clock: SimClock) -> None:
    """A result the converter cannot serialise fails the run with SerializationError, not retried."""
    calls: list[int] = []

    def bad() -> Any:
        calls.append(1)
        return object()

    @workflow("unserialisable", retries=3)
    def wf(ctx: Any) -> Flow:
        yield Run("bad", bad)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "SerializationError"
    assert run.error.step_id == "bad" and "bad" in run.error.message
    assert calls == [1]


def test_run_result_not_matching_annotation_fails_the_run(clock: SimClock) -> None:
    """A result that cannot be structured as the return annotation fails the run (SerializationError)."""

    def lying() -> int:
        return "not a number"  # type: ignore[return-value]

    @workflow("lying-annotation", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Run("lie", lying)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "SerializationError"


def test_run_retry_records_attempts_and_backs_off_durably(clock: SimClock) -> None:
    """With ``Retry`` each failed attempt is recorded and the run is pending with ``wake_at`` until the backoff fires."""
    calls: list[pendulum.DateTime] = []

    def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    @workflow("retry-step")
    def wf(ctx: Any) -> Flow:
        return (yield Run("flaky", flaky, retry=Retry(max_attempts=3, initial="10s", factor=2, jitter=0)))

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert run.status == "pending" and run.wake_at == T0.add(seconds=10) and run.waiting is None
    rec = run.timeline["flaky"]
    assert (rec.status, rec.attempts) == ("waiting", 1)
    assert rec.error is not None and (rec.error.type, rec.error.message) == ("ConnectionError", "try 1")
    h.advance("9s")
    assert len(calls) == 1
    h.advance("1s")
    run = h.get_run(run_id)
    assert len(calls) == 2 and run.wake_at == T0.add(seconds=30) and run.timeline["flaky"].attempts == 2
    h.advance("20s")
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == "ok"
    assert run.timeline["flaky"].attempts == 3 and run.timeline["flaky"].error is None
    assert calls == [T0, T0.add(seconds=10), T0.add(seconds=30)]


def test_run_non_retryable_errors_fail_at_once(clock: SimClock) -> None:
    """An exception listed in ``non_retryable`` is not retried."""
    calls: list[int] = []

    def missing() -> None:
        calls.append(1)
        raise KeyError("gone")

    @workflow("non-retryable")
    def wf(ctx: Any) -> Flow:
        yield Run("m", missing, retry=Retry(max_attempts=5, non_retryable=(KeyError,)))

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and calls == [1]
    assert run.timeline["m"].attempts == 1 and run.error is not None and run.error.type == "KeyError"


def test_run_sync_timeout_raises_step_timeout(clock: SimClock) -> None:
    """A sync attempt running past ``timeout`` fails with StepTimeoutError."""

    def slow() -> int:
        time.sleep(0.5)
        return 1

    @workflow("timeout-sync")
    def wf(ctx: Any) -> Flow:
        try:
            yield Run("slow", slow, timeout=0.05)
        except StepFailedError as exc:
            return exc.error_type

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.output == "StepTimeoutError"
    assert run.timeline["slow"].error is not None and run.timeline["slow"].error.type == "StepTimeoutError"


def test_run_async_timeout_cancels(clock: SimClock) -> None:
    """An async attempt running past ``timeout`` is cancelled and fails with StepTimeoutError."""
    cancelled: list[bool] = []

    async def slow() -> int:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return 1

    @workflow("timeout-async")
    def wf(ctx: Any) -> Flow:
        yield Run("slow", slow, timeout="50ms")

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.error is not None and run.error.type == "StepTimeoutError"
    deadline = time.monotonic() + 2
    while not cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled == [True]


def test_final_failure_thrown_as_step_failed_error(clock: SimClock) -> None:
    """A step's final failure is thrown into the generator as StepFailedError with its details."""

    def broken() -> None:
        raise ValueError("bad value")

    @workflow("step-failed")
    def wf(ctx: Any) -> Flow:
        try:
            yield Run("broken", broken, retry=Retry(max_attempts=2, initial="1s"))
        except StepFailedError as exc:
            return {"step": exc.step_id, "type": exc.error_type, "msg": exc.message, "attempts": exc.attempts}

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "completed"
    assert run.output == {"step": "broken", "type": "ValueError", "msg": "bad value", "attempts": 2}
    assert run.timeline["broken"].status == "failed"


def test_caught_failure_is_replayed_identically(clock: SimClock) -> None:
    """A caught failure is recorded once and re-thrown identically on replay (fn not re-run)."""
    calls: list[int] = []
    caught: list[tuple[str, str, str, int]] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("nope")

    @workflow("caught")
    def wf(ctx: Any) -> Flow:
        try:
            yield Run("broken", broken)
        except StepFailedError as exc:
            caught.append((exc.step_id, exc.error_type, exc.message, exc.attempts))
        yield Delay("d", "1m")
        return "done"

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.advance("1m")
    assert h.get_run(run_id).output == "done"
    assert calls == [1]
    assert caught == [("broken", "ValueError", "nope", 1)] * 2


def test_uncaught_failure_describes_original_exception(clock: SimClock) -> None:
    """Uncaught, the run's error is the original exception's type and message with the step id."""

    def broken() -> None:
        raise ValueError("the original message")

    @workflow("uncaught")
    def wf(ctx: Any) -> Flow:
        yield Run("broken", broken)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.error is not None
    assert (run.error.type, run.error.message, run.error.step_id) == (
        "ValueError",
        "the original message",
        "broken",
    )
    assert run.error.traceback and "ValueError" in run.error.traceback


def test_exception_in_workflow_code_names_the_current_step(clock: SimClock) -> None:
    """An exception raised by workflow code between yields fails the run with its type and message."""

    @workflow("workflow-raises")
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: 1)
        raise LookupError("no such thing")

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.error is not None and (run.error.type, run.error.message) == ("LookupError", "no such thing")
    assert run.error.step_id == "a"


# ====================================================================================== WaitFor


def _waiter(name: str, **kwargs: Any) -> pgflow.Workflow:
    def fn(ctx: Any) -> Flow:
        data = yield WaitFor("w", event="go", **kwargs)
        return {"data": data}

    fn.__name__ = name.replace("-", "_")
    return workflow(name)(fn)


def test_event_after_reaching_the_wait(clock: SimClock) -> None:
    """An event delivered while the run waits completes the WaitFor with its data."""
    wf = _waiter("wait-after")
    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert run.status == "paused" and run.waiting == pgflow.Waiting("w", "wait_for", "go", None)
    assert run.wake_at is None
    h.trigger_event(run_id, "go", {"x": 1})
    h.run_until_idle()
    assert h.get_run(run_id).output == {"data": {"x": 1}}


def test_event_before_reaching_the_wait_is_kept(clock: SimClock) -> None:
    """An event delivered before the run reaches its WaitFor is consumed on arrival, without suspending."""
    wf = _waiter("wait-before")
    h = harness(clock, wf)
    run = h.start_workflow(wf)
    h.trigger_event(run.id, "go", {"early": True})
    h.run_until_idle()
    done = h.get_run(run.id)
    assert done.status == "completed" and done.output == {"data": {"early": True}}


def test_event_data_defaults_to_empty_dict(clock: SimClock) -> None:
    """Data defaults to ``{}`` when the sender gives none."""
    wf = _waiter("wait-default")
    h = harness(clock, wf)
    run_id = start(h, wf)
    h.trigger_event(run_id, "go")
    h.run_until_idle()
    assert h.get_run(run_id).output == {"data": {}}


def test_mailbox_is_oldest_first_and_each_event_consumed_once(clock: SimClock) -> None:
    """Two WaitFors of one event take two buffered events oldest first; a third one waits."""

    @workflow("mailbox-order")
    def wf(ctx: Any) -> Flow:
        first = yield WaitFor("w1", event="go")
        second = yield WaitFor("w2", event="go")
        third = yield WaitFor("w3", event="go")
        return [first, second, third]

    h = harness(clock, wf)
    run = h.start_workflow(wf)
    h.trigger_event(run.id, "go", 1)
    h.trigger_event(run.id, "go", 2)
    h.trigger_event(run.id, "other", 99)
    h.run_until_idle()
    waiting = h.get_run(run.id)
    assert waiting.status == "paused" and waiting.waiting is not None and waiting.waiting.step_id == "w3"
    assert [e.data for e in h.store.mailbox(run.id)] == [99]  # type: ignore[attr-defined]
    h.trigger_event(run.id, "go", 3)
    h.run_until_idle()
    assert h.get_run(run.id).output == [1, 2, 3]
    assert sorted(h.store.consumed_events(run.id).values()) == ["w1", "w2", "w3"]  # type: ignore[attr-defined]


def test_wait_timeout_yields_none_and_records_timed_out(clock: SimClock) -> None:
    """When the timeout fires first the WaitFor yields None and is recorded as timed out."""
    wf = _waiter("wait-timeout", timeout="1h")
    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.get_run(run_id).wake_at == T0.add(hours=1)
    h.advance("59m")
    assert h.get_run(run_id).status == "paused"
    h.advance("1m")
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == {"data": None}
    rec = run.timeline["w"]
    assert rec.timed_out and rec.status == "completed" and rec.completed_at == T0.add(hours=1)


def test_event_arriving_after_timeout_stays_in_mailbox(clock: SimClock) -> None:
    """An event arriving after its WaitFor timed out is not consumed by it."""

    @workflow("late-event")
    def wf(ctx: Any) -> Flow:
        data = yield WaitFor("w", event="go", timeout="1h")
        yield Pause("p")
        return data

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.advance("1h")
    h.trigger_event(run_id, "go", "late")
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output is None
    assert [e.data for e in h.store.mailbox(run_id)] == ["late"]  # type: ignore[attr-defined]


def test_event_after_deadline_loses_to_the_timeout_while_held(clock: SimClock) -> None:
    """An event delivered after the WaitFor's deadline (the run was held) does not beat the timeout."""
    wf = _waiter("wait-held-deadline", timeout="1h")
    h = harness(clock, wf)
    run_id = start(h, wf)
    h.pause_workflow(run_id)
    h.advance("2h")
    h.trigger_event(run_id, "go", "too late")
    h.resume_workflow(run_id)
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.output == {"data": None} and run.timeline["w"].timed_out
    assert [e.data for e in h.store.mailbox(run_id)] == ["too late"]  # type: ignore[attr-defined]


def test_event_before_deadline_wins_while_held(clock: SimClock) -> None:
    """An event delivered before the deadline is consumed on resume, even if the deadline has passed since."""
    wf = _waiter("wait-held-early-event", timeout="1h")
    h = harness(clock, wf)
    run_id = start(h, wf)
    h.pause_workflow(run_id)
    h.advance("30m")
    h.trigger_event(run_id, "go", "in time")
    h.advance("2h")
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output == {"data": "in time"}


def test_wait_timeout_is_not_recomputed_on_replay(clock: SimClock) -> None:
    """The WaitFor deadline is recorded when first reached; replays keep it."""

    @attrs.frozen
    class Approval:
        approved: bool

    wf = _waiter("wait-keep-deadline", timeout="1h", schema=Approval)
    h = harness(clock, wf)
    run_id = start(h, wf)
    h.advance("30m")
    h.trigger_event(run_id, "go", {"approved": "yes"})  # rejected by the schema: forces a replay
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "paused" and run.timeline["w"].timeout_at == T0.add(hours=1)
    assert run.wake_at == T0.add(hours=1)
    h.advance("30m")
    run = h.get_run(run_id)
    assert run.status == "completed" and run.timeline["w"].completed_at == T0.add(hours=1)


def test_wait_schema_rejects_bad_data_which_stays_in_mailbox(clock: SimClock) -> None:
    """Data failing the schema stays in the mailbox and the run keeps waiting; valid data completes it."""

    @attrs.frozen
    class Approval:
        approved: bool

    wf = _waiter("wait-schema", schema=Approval)
    h = harness(clock, wf)
    run_id = start(h, wf)
    h.trigger_event(run_id, "go", {"approved": "yes"})
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "paused" and run.waiting is not None and run.waiting.step_id == "w"
    assert [e.data for e in h.store.mailbox(run_id)] == [{"approved": "yes"}]  # type: ignore[attr-defined]
    h.trigger_event(run_id, "go", {"approved": True})
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == {"data": {"approved": True}}
    assert run.timeline["w"].output == {"approved": True}
    assert [e.data for e in h.store.mailbox(run_id)] == [{"approved": "yes"}]  # type: ignore[attr-defined]


def test_wait_schema_value_is_structured_on_replay_too(clock: SimClock) -> None:
    """A schema-validated event is structured identically on first execution and on replay."""
    seen: list[Any] = []

    @attrs.frozen
    class Approval:
        approved: bool

    @workflow("wait-schema-replay")
    def wf(ctx: Any) -> Flow:
        approval = yield WaitFor("w", event="go", schema=Approval)
        seen.append(approval)
        yield Delay("d", "1m")

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.trigger_event(run_id, "go", {"approved": True})
    h.run_until_idle()
    h.advance("1m")
    assert seen == [Approval(True), Approval(True)]


# ====================================================================== WaitUntil / Delay / Sleep


def test_delay_records_wake_time_and_fires(clock: SimClock) -> None:
    """Delay records its wake-up time when first reached, and the run wakes then."""

    @workflow("delay")
    def wf(ctx: Any) -> Flow:
        yield Delay("d", "2h")
        return "woke"

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert run.status == "paused" and run.wake_at == T0.add(hours=2)
    assert run.waiting == pgflow.Waiting("d", "delay", None, T0.add(hours=2))
    h.advance("1h59m")
    assert h.get_run(run_id).status == "paused"
    h.advance("1m")
    run = h.get_run(run_id)
    assert run.output == "woke" and run.timeline["d"].completed_at == T0.add(hours=2)


def test_sleep_is_a_delay(clock: SimClock) -> None:
    """``Sleep`` suspends like ``Delay`` and is recorded as kind ``delay``."""

    @workflow("sleep")
    def wf(ctx: Any) -> Flow:
        yield Sleep("s", {"minutes": 5})

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.get_run(run_id).timeline["s"].kind == "delay"
    h.advance("5m")
    assert h.get_run(run_id).status == "completed"


def test_wait_until_iso_string(clock: SimClock) -> None:
    """``WaitUntil`` accepts an ISO-8601 string; a naive one means UTC."""

    @workflow("until-iso")
    def wf(ctx: Any) -> Flow:
        yield WaitUntil("u", "2030-01-01T06:00:00")

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.get_run(run_id).wake_at == pendulum.datetime(2030, 1, 1, 6, tz="UTC")
    h.run_until_complete(run_id)
    assert clock.now() == pendulum.datetime(2030, 1, 1, 6, tz="UTC")


def test_wait_until_aware_datetime_other_zone(clock: SimClock) -> None:
    """An aware datetime in another zone is the same instant in UTC."""
    when = pendulum.datetime(2030, 1, 1, 9, tz="Europe/Paris")  # 08:00 UTC

    @workflow("until-aware")
    def wf(ctx: Any) -> Flow:
        yield WaitUntil("u", when)

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.get_run(run_id).wake_at == pendulum.datetime(2030, 1, 1, 8, tz="UTC")


def test_wait_until_past_time_completes_at_once(clock: SimClock) -> None:
    """A time already past completes the step at once, without suspending."""

    @workflow("until-past")
    def wf(ctx: Any) -> Flow:
        yield WaitUntil("u", "2000-01-01T00:00:00Z")
        return "on"

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == "on"
    assert run.timeline["u"].status == "completed" and run.timeline["u"].completed_at == T0


def test_invalid_wait_until_fails_the_run(clock: SimClock) -> None:
    """An unparseable time fails the run with WorkflowDefinitionError (not retried)."""

    @workflow("until-bad", retries=2)
    def wf(ctx: Any) -> Flow:
        yield WaitUntil("u", "tomorrow-ish")

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"


# ======================================================================================== Pause


def test_pause_step_waits_for_resume(clock: SimClock) -> None:
    """A Pause step suspends the run until ``resume_workflow``."""

    @workflow("pause-step")
    def wf(ctx: Any) -> Flow:
        value = yield Pause("p")
        return {"value": value}

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert run.status == "paused" and not run.held and run.waiting == pgflow.Waiting("p", "pause")
    h.advance("10d")
    assert h.get_run(run_id).status == "paused"
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output == {"value": None}


def test_pause_step_fast_forward(clock: SimClock) -> None:
    """``fast_forward_workflow`` resumes a Pause step."""

    @workflow("pause-ff")
    def wf(ctx: Any) -> Flow:
        yield Pause("p")

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.fast_forward_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).status == "completed"


# ========================================================================================= Poll


def test_poll_first_call_is_immediate_then_every_interval(clock: SimClock) -> None:
    """Poll calls ``fn`` when first reached, then every ``interval`` until it returns data."""
    calls: list[pendulum.DateTime] = []

    def ready() -> Any:
        calls.append(clock.now())
        return {"done": True} if len(calls) == 3 else None

    @workflow("poll")
    def wf(ctx: Any) -> Flow:
        return (yield Poll("p", ready, interval="10s"))

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert calls == [T0] and run.status == "paused" and run.wake_at == T0.add(seconds=10)
    assert run.waiting is not None and run.waiting.kind == "poll"
    h.advance("10s")
    h.advance("10s")
    run = h.get_run(run_id)
    assert calls == [T0, T0.add(seconds=10), T0.add(seconds=20)]
    assert run.status == "completed"


def test_poll_yields_poll_result(clock: SimClock) -> None:
    """Poll yields ``PollResult(timed_out=False, data)`` with fn's truthy value."""
    seen: list[Any] = []

    @workflow("poll-result")
    def wf(ctx: Any) -> Flow:
        result = yield Poll("p", lambda: "ready")
        seen.append(result)

    h = harness(clock, wf)
    start(h, wf)
    assert seen == [PollResult(False, "ready")]


def test_poll_false_means_not_yet_but_zero_is_data(clock: SimClock) -> None:
    """``False`` counts as "not yet"; other falsy values such as ``0`` are data."""
    values = iter([False, None, 0])

    @workflow("poll-falsy")
    def wf(ctx: Any) -> Flow:
        result = yield Poll("p", lambda: next(values), interval="1s")
        return result.data

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.output == 0 and run.timeline["p"].attempts == 3


def test_poll_exception_counts_as_not_yet(clock: SimClock) -> None:
    """An exception from the poll function is logged and counts as "not yet"."""
    calls: list[int] = []

    def flaky() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return 42

    @workflow("poll-raises")
    def wf(ctx: Any) -> Flow:
        return (yield Poll("p", flaky, interval="5s")).data

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.get_run(run_id).status == "paused"
    h.advance("5s")
    assert h.get_run(run_id).output == 42


def test_poll_timeout_fires_at_deadline_not_next_tick(clock: SimClock) -> None:
    """With interval 1h and timeout 90m the poll times out at +90m, without a third call."""
    calls: list[pendulum.DateTime] = []

    def never() -> None:
        calls.append(clock.now())

    @workflow("poll-timeout")
    def wf(ctx: Any) -> Flow:
        result = yield Poll("p", never, interval="1h", timeout="90m")
        return {"timed_out": result.timed_out, "data": result.data}

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.output == {"timed_out": True, "data": None}
    assert calls == [T0, T0.add(hours=1)]
    assert run.timeline["p"].timed_out and run.timeline["p"].completed_at == T0.add(minutes=90)
    assert clock.now() == T0.add(minutes=90)


def test_poll_interval_below_minimum_fails_the_run(clock: SimClock) -> None:
    """An interval below ``min_poll_interval`` fails the run at once with WorkflowDefinitionError."""
    calls: list[int] = []

    @workflow("poll-too-fast", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Poll("p", lambda: calls.append(1), interval="500ms")

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0 and calls == []
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert "min_poll_interval" in run.error.message


def test_min_poll_interval_is_configurable(clock: SimClock) -> None:
    """A harness with a lower ``min_poll_interval`` accepts a faster poll."""

    @workflow("poll-fast")
    def wf(ctx: Any) -> Flow:
        yield Poll("p", lambda: True, interval="500ms")

    h = harness(clock, wf, min_poll_interval="100ms")
    assert h.run_until_complete(h.start_workflow(wf).id).status == "completed"


# ============================================================================ run-level retries


def test_run_retries_use_all_attempts_with_exponential_backoff(clock: SimClock) -> None:
    """``retries=3`` gives 4 attempts, backoff 1s/2s/4s, and ends failed with ``retry_count == 3``."""
    a_calls: list[int] = []
    b_calls: list[pendulum.DateTime] = []

    def b() -> None:
        b_calls.append(clock.now())
        raise ValueError(f"fail {len(b_calls)}")

    @workflow("run-retries", retries=3)
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: a_calls.append(1))
        yield Run("b", b)

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert (run.status, run.retry_count, run.wake_at) == ("pending", 1, T0.add(seconds=1))
    assert run.error is not None and run.error.message == "fail 1"
    h.advance("1s")
    run = h.get_run(run_id)
    assert (run.status, run.retry_count, run.wake_at) == ("pending", 2, T0.add(seconds=3))
    h.advance("2s")
    run = h.get_run(run_id)
    assert (run.retry_count, run.wake_at) == (3, T0.add(seconds=7))
    h.advance("4s")
    run = h.get_run(run_id)
    assert (run.status, run.retry_count, run.max_retries) == ("failed", 3, 3)
    assert run.error is not None and (run.error.type, run.error.message, run.error.step_id) == (
        "ValueError", "fail 4", "b",
    )  # fmt: skip
    assert b_calls == [T0, T0.add(seconds=1), T0.add(seconds=3), T0.add(seconds=7)]
    assert a_calls == [1]  # completed steps are not re-executed


def test_run_retry_clears_error_after_success(clock: SimClock) -> None:
    """A run that completes on a later attempt has ``error = None``."""
    calls: list[int] = []

    def b() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "ok"

    @workflow("run-retry-success", retries=5)
    def wf(ctx: Any) -> Flow:
        return (yield Run("b", b))

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert (run.status, run.output, run.error, run.retry_count) == ("completed", "ok", None, 2)


def test_start_workflow_overrides_retries(clock: SimClock) -> None:
    """``start_workflow(retries=...)`` overrides the definition's budget."""

    @workflow("override-retries", retries=5)
    def wf(ctx: Any) -> Flow:
        yield Run("b", lambda: 1 / 0)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf, retries=1).id)
    assert (run.status, run.retry_count, run.max_retries) == ("failed", 1, 1)


def test_retry_budget_not_reset_by_events(clock: SimClock) -> None:
    """Events and timers between attempts never reset the run's retry count."""
    calls: list[int] = []

    def maybe() -> None:
        calls.append(1)
        raise RuntimeError("x")

    @workflow("budget", retries=2)
    def wf(ctx: Any) -> Flow:
        yield WaitFor("w", event="go")
        yield Delay("d", "1m")
        yield Run("r", maybe)

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.trigger_event(run_id, "go")
    run = h.run_until_complete(run_id)
    assert (run.status, run.retry_count) == ("failed", 2) and len(calls) == 3


# ============================================================================= workflow timeout


def test_workflow_timeout_enforced_while_waiting(clock: SimClock) -> None:
    """At ``timeout_at`` a waiting run fails with WorkflowTimeoutError."""

    @workflow("wf-timeout", timeout="1h", retries=3)
    def wf(ctx: Any) -> Flow:
        yield WaitFor("w", event="never")

    h = harness(clock, wf)
    run_id = start(h, wf)
    run = h.get_run(run_id)
    assert run.timeout_at == T0.add(hours=1) and run.status == "paused"
    h.advance("1h")
    run = h.get_run(run_id)
    assert run.status == "failed" and run.error is not None and run.error.type == "WorkflowTimeoutError"
    assert run.retry_count == 0 and run.completed_at == T0.add(hours=1)


def test_workflow_timeout_cuts_a_long_delay(clock: SimClock) -> None:
    """A Delay longer than the workflow timeout ends with the timeout, not the delay."""

    @workflow("wf-timeout-delay", timeout="1h")
    def wf(ctx: Any) -> Flow:
        yield Delay("d", "1 day")

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.error is not None and run.error.type == "WorkflowTimeoutError"
    assert run.completed_at == T0.add(hours=1)


def test_start_workflow_timeout_override(clock: SimClock) -> None:
    """``start_workflow(timeout=...)`` sets ``timeout_at`` from now."""

    @workflow("wf-timeout-override")
    def wf(ctx: Any) -> Flow:
        yield Pause("p")

    h = harness(clock, wf)
    run_id = start(h, wf, timeout="10m")
    assert h.get_run(run_id).timeout_at == T0.add(minutes=10)
    h.advance("10m")
    assert h.get_run(run_id).status == "failed"


# ========================================================================== definition errors

FLAVOUR = {"kind": "run", "event": "first"}


@workflow("flip-flop", retries=3)
def flip_flop(ctx: Any) -> Flow:
    """Behaviour depends on module state: only tests flip it, to simulate a code change."""
    step_a = "a"  # a variable: the static check would reject the literal id in both branches
    if FLAVOUR["kind"] == "run":
        yield Run(step_a, lambda: 1)
    else:
        yield Delay(step_a, "1s")
    yield Run("b", lambda: 2)
    yield WaitFor("w", event=FLAVOUR["event"])


@pytest.fixture
def flavour() -> Iterator[dict[str, str]]:
    saved = dict(FLAVOUR)
    yield FLAVOUR
    FLAVOUR.update(saved)


def test_changed_step_kind_is_non_determinism(clock: SimClock, flavour: dict[str, str]) -> None:
    """A step recorded as ``run`` that replays as ``delay`` fails the run with NonDeterminismError."""
    h = harness(clock, flip_flop)
    h.crash_after("a")
    run_id = start(h, flip_flop)
    flavour["kind"] = "delay"  # "redeploy" between the crash and the recovery
    h.advance("31s")
    run = h.get_run(run_id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "NonDeterminismError"
    assert run.error.step_id == "a" and "run" in run.error.message and "delay" in run.error.message


def test_changed_event_name_is_non_determinism(clock: SimClock, flavour: dict[str, str]) -> None:
    """A WaitFor recorded for one event that replays with another fails with NonDeterminismError."""
    h = harness(clock, flip_flop)
    run_id = start(h, flip_flop)
    assert h.get_run(run_id).waiting == pgflow.Waiting("w", "wait_for", "first")
    flavour["event"] = "second"
    h.trigger_event(run_id, "first")
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "failed" and run.error is not None and run.error.type == "NonDeterminismError"
    assert "'first'" in run.error.message and "'second'" in run.error.message


def test_duplicate_step_id_fails_the_run(clock: SimClock) -> None:
    """Yielding the same step id twice in one run fails it with DuplicateStepError, not retried."""

    @workflow("dup-steps", retries=2)
    def wf(ctx: Any) -> Flow:
        for _ in range(2):
            yield Run("same", lambda: 1)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "DuplicateStepError" and run.error.step_id == "same"


@pytest.mark.parametrize("bad_id", ["", "x" * 257, 42])
def test_invalid_step_id_is_a_definition_error(clock: SimClock, bad_id: Any) -> None:
    """An empty, over-long or non-string step id fails the run with WorkflowDefinitionError."""

    @workflow("bad-step-id", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Run(bad_id, lambda: 1)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"


def test_yielding_a_non_command_is_a_definition_error(clock: SimClock) -> None:
    """Yielding something that is not a step command fails the run with WorkflowDefinitionError."""

    @workflow("not-a-command")
    def wf(ctx: Any) -> Flow:
        yield 42

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert (
        run.error is not None and run.error.type == "WorkflowDefinitionError" and "int" in run.error.message
    )


def test_transaction_on_memory_store_is_unsupported(clock: SimClock) -> None:
    """A Transaction step on the in-memory store fails the run at once with UnsupportedError."""
    calls: list[int] = []

    @workflow("tx-memory", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Run("before", lambda: 1)
        yield Transaction("tx", lambda conn: calls.append(1))

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0 and calls == []
    assert run.error is not None and run.error.type == "UnsupportedError" and run.error.step_id == "tx"


def test_unserialisable_output_fails_the_run(clock: SimClock) -> None:
    """A workflow return value the converter cannot serialise fails the run with SerializationError."""

    @workflow("bad-output", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: 1)
        return object()

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "SerializationError"


# ========================================================================================== All


def test_all_results_in_argument_order(clock: SimClock) -> None:
    """All yields each command's result in argument order, each with its own record."""

    @workflow("all-order")
    def wf(ctx: Any) -> Flow:
        return (yield All(Run("a", lambda: "A"), Run("b", lambda: "B"), Run("c", lambda: "C")))

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.output == ["A", "B", "C"]
    assert [s for s in run.timeline] == ["a", "b", "c"]
    assert all(r.status == "completed" for r in run.timeline.values())


def test_all_throws_first_failure_after_others_finish(clock: SimClock) -> None:
    """If parts fail, the others still finish and the first failure in argument order is thrown."""
    ran: list[str] = []

    def ok(name: str) -> str:
        ran.append(name)
        return name

    def fail(name: str, exc: type[Exception]) -> None:
        ran.append(name)
        raise exc(name)

    @workflow("all-fail")
    def wf(ctx: Any) -> Flow:
        try:
            yield All(Run("a", ok, "a"), Run("b", fail, "b", ValueError), Run("c", fail, "c", KeyError),
                      Run("d", ok, "d"))  # fmt: skip
        except StepFailedError as exc:
            return (exc.step_id, exc.error_type)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.output == ["b", "ValueError"]
    assert sorted(ran) == ["a", "b", "c", "d"]
    assert run.timeline["d"].status == "completed" and run.timeline["c"].status == "failed"


def test_all_mixes_waits_and_runs(clock: SimClock) -> None:
    """All can combine Run, Delay and WaitFor; it resolves when every part has."""

    @workflow("all-mixed")
    def wf(ctx: Any) -> Flow:
        return (yield All(Run("r", lambda: 1), Delay("d", "1h"), WaitFor("w", event="go")))

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert h.get_run(run_id).status == "paused"
    h.advance("1h")
    assert h.get_run(run_id).status == "paused"
    h.trigger_event(run_id, "go", "data")
    h.run_until_idle()
    assert h.get_run(run_id).output == [1, None, "data"]


def test_all_parts_are_recorded_once_across_replays(clock: SimClock) -> None:
    """Completed parts of an All are not re-executed while another part still waits."""
    calls: list[str] = []

    @workflow("all-replay")
    def wf(ctx: Any) -> Flow:
        return (yield All(Run("r", lambda: calls.append("r") or "r"), WaitFor("w", event="go")))

    h = harness(clock, wf)
    run_id = start(h, wf)
    h.trigger_event(run_id, "go", 7)
    h.run_until_idle()
    assert h.get_run(run_id).output == ["r", 7] and calls == ["r"]


# ================================================================ control flow (pg-workflows defect)


def test_early_return_completes_the_run(clock: SimClock) -> None:
    """A run completes when the generator returns early, whatever steps follow in source."""

    @workflow("early-return")
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: 1)
        if True:
            return "early"
        yield Run("never", lambda: 2)  # pragma: no cover

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert (run.status, run.output, list(run.timeline)) == ("completed", "early", ["a"])


def test_untaken_branch_completes_the_run(clock: SimClock) -> None:
    """A run whose last source step is in an untaken branch still completes."""

    @workflow("untaken-branch", input=dict)
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: 1)
        if ctx.input.get("vip"):
            yield Run("vip-only", lambda: 2)

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf, {"vip": False}).id)
    assert run.status == "completed" and list(run.timeline) == ["a"]


def test_loop_with_dynamic_ids_completes(clock: SimClock) -> None:
    """A loop of steps with dynamic ids runs each iteration once and completes."""

    @workflow("loop")
    def wf(ctx: Any) -> Flow:
        total = 0
        for i in range(5):
            total += yield Run(f"add-{i}", lambda i=i: i)
            yield Delay(f"nap-{i}", "1m")
        return total

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.output == 10 and len(run.timeline) == 10


def test_workflow_with_no_steps_completes(clock: SimClock) -> None:
    """A generator that returns before any yield completes with its value."""

    @workflow("no-steps")
    def wf(ctx: Any) -> Flow:
        if ctx.input is None:
            return "nothing to do"
        yield Run("a", lambda: 1)  # pragma: no cover

    h = harness(clock, wf)
    assert h.run_until_complete(h.start_workflow(wf).id).output == "nothing to do"


# ============================================================== the Replayer directly (no store)


def _replayer(wf: pgflow.Workflow, history: dict[str, Any], attempt: int = 0) -> Replayer:
    return Replayer(wf, ReplayInput("run-1", wf.id, None, attempt, None), history)


def test_replayer_asks_to_execute_a_fresh_run_step(clock: SimClock) -> None:
    """On an empty history a Run step is an Execute decision."""

    @workflow("r-exec")
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: 1)

    decision = _replayer(wf, {}).decide(T0)
    assert isinstance(decision.action, Execute) and decision.action.steps[0][0].step_id == "a"


def test_replayer_suspends_at_recorded_deadline(clock: SimClock) -> None:
    """A waiting WaitFor record's deadline is reused, not recomputed from ``now``."""

    @workflow("r-deadline")
    def wf(ctx: Any) -> Flow:
        yield WaitFor("w", event="go", timeout="1h")

    first = _replayer(wf, {}).decide(T0)
    assert isinstance(first.action, Suspend) and first.action.wake_at == T0.add(hours=1)
    history = {r.step_id: r for r in first.writes}
    later = _replayer(wf, history).decide(T0.add(minutes=30))
    assert isinstance(later.action, Suspend) and later.action.wake_at == T0.add(hours=1)
    assert later.writes == ()
    fired = _replayer(wf, history).decide(T0.add(hours=1))
    assert isinstance(fired.action, Complete) and fired.writes[0].timed_out


def test_replayer_drops_failures_of_earlier_attempts(clock: SimClock) -> None:
    """A failure recorded by an earlier run attempt is retried (executed), not replayed."""

    @workflow("r-attempts")
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: 1)

    failed = pgflow.StepRecord("a", "run", "failed", error=pgflow.RunError("ValueError", "x"), attempts=1)
    assert isinstance(_replayer(wf, {"a": failed}, attempt=0).decide(T0).action, Fail)
    assert isinstance(_replayer(wf, {"a": failed}, attempt=1).decide(T0).action, Execute)


def test_input_is_rebuilt_identically_on_every_replay(clock: SimClock) -> None:
    """``ctx.input`` is an equal instance of the input class on first execution and on replay."""
    inputs: list[Any] = []

    @workflow("input-replay", input=Item)
    def wf(ctx: pgflow.Context[Item]) -> Flow:
        inputs.append(ctx.input)
        yield Delay("d", "1m")

    h = harness(clock, wf)
    start(h, wf, Item("a", 3))
    h.advance("1m")
    assert inputs == [Item("a", 3), Item("a", 3)] and all(type(i) is Item for i in inputs)


def test_run_datetime_result_with_annotation(clock: SimClock) -> None:
    """A ``-> pendulum.DateTime`` step result comes back as an equal aware DateTime."""
    seen: list[Any] = []

    def when() -> pendulum.DateTime:
        return T0.add(days=3)

    @workflow("run-datetime")
    def wf(ctx: Any) -> Flow:
        seen.append((yield Run("when", when)))
        yield Delay("d", "1m")

    h = harness(clock, wf)
    start(h, wf)
    h.advance("1m")
    assert seen == [T0.add(days=3)] * 2 and all(isinstance(v, pendulum.DateTime) for v in seen)


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: Delay("d", "soon"), "duration"),
        (lambda: WaitFor("w", event="", timeout="1h"), "event"),
        (lambda: WaitFor("w", event="go", timeout="-5s"), "timeout"),
        (lambda: Delay("d", "100000000 weeks"), "duration"),
        (lambda: Run("r", 5), "fn"),
    ],
    ids=["bad-duration", "empty-event", "negative-timeout", "overflowing-duration", "fn-not-callable"],
)
def test_invalid_command_arguments_fail_the_run(clock: SimClock, build: Any, argument: str) -> None:
    """A command built with a bad argument inside a workflow fails the run with
    WorkflowDefinitionError naming the argument, not retried, and runs nothing after it."""
    after: list[str] = []

    @workflow("bad-args", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Run("before", lambda: 1)
        yield build()
        after.append("ran")

    h = harness(clock, wf)
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 0 and after == []
    assert run.error is not None and run.error.type == "WorkflowDefinitionError"
    assert argument in run.error.message and run.timeline["before"].status == "completed"


def test_workflow_finally_block_runs_when_generator_is_discarded(clock: SimClock) -> None:
    """A suspended generator is closed, so the workflow's ``finally`` may run more than once."""
    finals: list[str] = []

    @workflow("finally")
    def wf(ctx: Any) -> Flow:
        try:
            yield Delay("d", "1m")
        finally:
            finals.append("finally")

    h = harness(clock, wf)
    run_id = start(h, wf)
    assert finals == ["finally"]
    h.advance("1m")
    assert h.get_run(run_id).status == "completed" and finals == ["finally", "finally"]
