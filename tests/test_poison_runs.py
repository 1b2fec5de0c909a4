"""No poison runs (SPEC §13): whatever goes wrong while the engine handles a run, the run never loops.
Either the outcome is recorded, or the run fails at once, not retried, with ``error.type`` naming the
class; a step function runs at most once more than its recorded attempts."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import Delay, Poll, Retry, Run, WaitFor, workflow
from pgflow.testing import Harness

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
HUGE = "100000000 weeks"


@pytest.fixture
def make_harness(harness_on_both_stores: Callable[..., Harness]) -> Callable[..., Harness]:
    return functools.partial(harness_on_both_stores, lease="2s")


class Calls:
    def __init__(self) -> None:
        self.n = 0

    def count(self, result: Any = "ok") -> Callable[..., Any]:
        def step(*_: Any) -> Any:
            self.n += 1
            if isinstance(result, BaseException):
                raise result
            return result

        return step


class BrokenMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def _ends(h: Harness, run_id: str) -> pgflow.WorkflowRun:
    """Run for a simulated minute (30 lease periods): a looping run would re-execute every 2 s."""
    for _ in range(30):
        h.advance("2s")
    return h.get_run(run_id)


BAD_STEP_ERRORS = [
    pytest.param(ValueError("a NUL \x00 in the message"), "ValueError", "\\x00", id="nul-in-message"),
    pytest.param(ValueError("a lone \ud800 surrogate"), "ValueError", "\\ud800", id="surrogate-in-message"),
    pytest.param(BrokenMessage(), "BrokenMessage", "message unavailable", id="str-raises"),
    pytest.param(ValueError("x" * 100_000), "ValueError", "characters)", id="huge-message"),
]


@pytest.mark.parametrize(("error", "type_name", "shown"), BAD_STEP_ERRORS)
def test_a_step_error_that_is_hard_to_store_is_recorded(
    make_harness: Callable[..., Harness], error: Exception, type_name: str, shown: str
) -> None:
    """A step error whose message holds NUL, lone surrogates, is huge, or cannot be turned into a
    string is stored escaped; the run fails once, with the original type, the step ran once."""
    calls = Calls()
    boom = calls.count(error)  # built outside the workflow: a call as the step function is refused

    @workflow("bad-error")
    def wf(ctx: Any) -> Flow:
        yield Run("boom", boom)

    h = make_harness(wf)
    run = _ends(h, h.start_workflow(wf).id)
    assert run.status == "failed" and run.error is not None and calls.n == 1
    assert run.error.type == type_name and shown in run.error.message and run.error.step_id == "boom"
    assert run.timeline["boom"].status == "failed" and run.timeline["boom"].attempts == 1


def test_a_hard_to_store_step_error_is_retried_like_any_other(make_harness: Callable[..., Harness]) -> None:
    """With run retries left, such a failure is retried by the run's budget, then the run fails."""
    calls = Calls()
    boom = calls.count(ValueError("nul \x00"))

    @workflow("bad-error-retries", retries=2, retry_backoff="1s")
    def wf(ctx: Any) -> Flow:
        yield Run("boom", boom)

    h = make_harness(wf)
    run = _ends(h, h.start_workflow(wf).id)
    assert run.status == "failed" and run.retry_count == 2 and calls.n == 3


def _bad_step_id(suffix: str) -> Callable[[Any], Flow]:
    def wf(ctx: Any) -> Flow:
        yield Run("ok", lambda: 1)
        yield Run("step" + suffix, lambda: 2)

    return wf


def _bad_event(suffix: str) -> Callable[[Any], Flow]:
    def wf(ctx: Any) -> Flow:
        yield Run("ok", lambda: 1)
        yield WaitFor("wait", event="event" + suffix)

    return wf


def _huge_delay(ctx: Any) -> Flow:
    yield Run("ok", lambda: 1)
    yield Delay("nap", HUGE)


def _huge_wait_timeout(ctx: Any) -> Flow:
    yield Run("ok", lambda: 1)
    yield WaitFor("wait", event="go", timeout=HUGE)


def _huge_poll_interval(ctx: Any) -> Flow:
    yield Run("ok", lambda: 1)
    yield Poll("poll", lambda: None, interval=HUGE)


def _huge_poll_timeout(ctx: Any) -> Flow:
    yield Run("ok", lambda: 1)
    yield Poll("poll", lambda: None, timeout=HUGE)


def _huge_retry_backoff(ctx: Any) -> Flow:
    yield Run("ok", lambda: 1)
    yield Run("flaky", _always_fails, retry=Retry(max_attempts=3, initial=HUGE, max_delay=HUGE))


def _always_fails() -> None:
    raise ConnectionError("down")


BAD_DEFINITIONS = [
    pytest.param(_bad_step_id("\x00"), id="nul-in-step-id"),
    pytest.param(_bad_step_id("\ud800"), id="surrogate-in-step-id"),
    pytest.param(_bad_step_id("x" * 300), id="step-id-too-long"),
    pytest.param(_bad_event("\x00"), id="nul-in-event-name"),
    pytest.param(_bad_event("\udfff"), id="surrogate-in-event-name"),
    pytest.param(_huge_delay, id="delay-past-year-9999"),
    pytest.param(_huge_wait_timeout, id="wait-timeout-past-year-9999"),
    pytest.param(_huge_poll_interval, id="poll-interval-past-year-9999"),
    pytest.param(_huge_poll_timeout, id="poll-timeout-past-year-9999"),
    pytest.param(_huge_retry_backoff, id="retry-backoff-past-year-9999"),
]


@pytest.mark.parametrize("fn", BAD_DEFINITIONS)
def test_a_bad_id_or_duration_inside_a_workflow_fails_the_run_at_once(
    make_harness: Callable[..., Harness], fn: Callable[[Any], Flow]
) -> None:
    """A step id or event name the database cannot store, or a wake-up time past year 9999, fails
    the run at once with WorkflowDefinitionError, not retried (even with run retries left)."""
    wf = workflow("bad-definition", retries=3)(fn)
    h = make_harness(wf)
    run = _ends(h, h.start_workflow(wf).id)
    assert run.status == "failed" and run.error is not None, run
    assert run.error.type == "WorkflowDefinitionError" and run.retry_count == 0, run.error
    assert run.timeline["ok"].status == "completed" and run.timeline["ok"].attempts == 1
    assert len(run.error.message) < 2_000


def test_an_error_inside_the_engine_fails_the_run_instead_of_looping(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure but a database one while the engine handles a run (here: building a step's
    outcome record) fails the run at once, named by the exception's class, not retried."""
    import pgflow.step_records

    calls = Calls()
    step = calls.count()

    def broken(*_: Any, **__: Any) -> Any:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(pgflow.step_records, "run_outcome", broken)

    @workflow("engine-bug", retries=3)
    def wf(ctx: Any) -> Flow:
        yield Run("a", step)

    h = make_harness(wf)
    run = _ends(h, h.start_workflow(wf).id)
    assert run.status == "failed" and run.error is not None and run.error.type == "OverflowError"
    assert run.retry_count == 0 and calls.n == 1


# -- a real engine, real leases ----------------------------------------------------------------------

EXECUTIONS: dict[str, int] = {}
_lock = threading.Lock()


def _fails_with_nul(key: str) -> None:
    with _lock:
        EXECUTIONS[key] = EXECUTIONS.get(key, 0) + 1
    raise ValueError("NUL \x00 and \ud800 in a message")


@workflow("poison-engine")
def poison_engine(ctx: pgflow.Context[Any]) -> Flow:
    yield Run("boom", _fails_with_nul, ctx.input)


NUL = "\x00"


@workflow("poison-engine-id")
def poison_engine_id(ctx: pgflow.Context[Any]) -> Flow:
    yield Run("count", _count_only, ctx.input)
    yield Run(f"bad{NUL}id", lambda: None)  # (a literal one is refused at decoration)


def _count_only(key: str) -> None:
    with _lock:
        EXECUTIONS[key] = EXECUTIONS.get(key, 0) + 1


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("wf", "expected"),
    [(poison_engine, "ValueError"), (poison_engine_id, "WorkflowDefinitionError")],
    ids=["step-error", "step-id"],
)
def test_an_engine_does_not_re_execute_a_poisoned_run(
    pg_dsn: str, pg_schema: str, wf: pgflow.Workflow, expected: str
) -> None:
    """On a real engine with a 1 s lease, a poisoned run ends at once and its step ran once (the
    measured defect: 7 executions in 12 s, for ever)."""
    key = f"{wf.id}-{time.monotonic_ns()}"
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[wf], lease="1s") as engine:
        run = engine.start_workflow(wf, key)
        done = engine.wait_for_run(run.id, timeout="10s")
        time.sleep(2.5)  # more than two lease periods: a looping run would execute again
        assert engine.get_run(run.id).status == "failed"
    assert done.status == "failed" and done.error is not None and done.error.type == expected
    assert EXECUTIONS[key] == 1


def test_when_even_the_failure_cannot_be_recorded_the_error_type_is(
    make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last resort: if writing the failure itself raises (not a database failure), the run still
    ends, failed, with the error's type and a message pointing at the worker's log."""
    calls = Calls()
    step = calls.count()
    import pgflow.step_records

    monkeypatch.setattr(pgflow.step_records, "run_outcome", _raise_overflow)

    @workflow("unrecordable", retries=2)
    def wf(ctx: Any) -> Flow:
        yield Run("a", step)

    h = make_harness(wf)
    real_commit = h.store.commit

    def picky_commit(lease: Any, now: Any, duration: Any, batch: Any, transaction: Any = None) -> Any:
        error = getattr(batch.outcome, "error", None)
        if error is not None and "worker's log" not in error.message:
            raise TypeError("cannot adapt this error")
        return real_commit(lease, now, duration, batch, transaction)

    monkeypatch.setattr(h.store, "commit", picky_commit)
    run = _ends(h, h.start_workflow(wf).id)
    assert run.status == "failed" and run.error is not None and run.error.type == "OverflowError"
    assert "worker's log" in run.error.message and calls.n == 1 and run.retry_count == 0


def _raise_overflow(*_: Any, **__: Any) -> Any:
    raise OverflowError("date value out of range")


@pytest.mark.postgres
def test_a_value_postgres_refuses_is_not_a_storage_error(pg_dsn: str, pg_schema: str) -> None:
    """A value PostgreSQL refuses (bad data, not a failing database) raises SerializationError, never
    StorageError, which callers would retry for ever; nothing is written."""
    from psycopg_pool import ConnectionPool

    from pgflow.postgres import PostgresStore
    from pgflow.store import NewRun

    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStore(pool, pg_schema)
        store.migrate()
        store.start_run(NewRun("r1", "wf", None, None, 0, 1.0, None, None, T0))
        with pytest.raises(pgflow.SerializationError) as caught:
            store.deliver_event("r1", None, "bad\x00name", {}, T0)
        assert not isinstance(caught.value, pgflow.StorageError)
        assert store.mailbox("r1") == [] and store.get("r1", None)[0].mailbox_seq == 0
