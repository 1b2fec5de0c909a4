"""Lifecycle rules (SPEC §2–§5), each pinned end to end through the public API, on both stores.

Every test runs on the in-memory ``Harness()`` and on ``Harness(dsn=..., schema=...)`` (marked
``postgres``), on a simulated clock. Each pins one behaviour that a mutation of ``transitions.py``,
``processor.py``, ``replay.py`` or a store survived before (see the docstrings); the rules found
broken (now fixed) are pinned at the end, each naming the bug it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import (
    All,
    Child,
    Delay,
    InvalidStateError,
    Poll,
    Retry,
    Run,
    WaitFor,
    workflow,
)
from pgflow.store import SuspendRun
from pgflow.testing import Harness, SimClock

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
LEASE = "30s"
CALLS: Counter[str] = Counter()


def counted(name: str) -> str:
    CALLS[name] += 1
    return name


def fail(message: str) -> None:
    CALLS[message] += 1
    raise ValueError(message)


# -- workflows ---------------------------------------------------------------------------------------


@workflow("awaiter", timeout="1h")
def awaiter(ctx: Any) -> Flow:
    return (yield WaitFor("w", event="go"))


@workflow("napper", timeout="1h")
def napper(ctx: Any) -> Flow:
    yield Delay("nap", "1 day")
    return "rested"


@workflow("one-step", timeout="1h")
def one_step(ctx: Any) -> Flow:
    return (yield Run("a", counted, "a"))


@workflow("flaky", retries=3, retry_backoff="1h", timeout="10m")
def flaky(ctx: Any) -> Flow:
    yield Run("boom", fail, "boom")
    return "never"


def three_steps(ctx: Any) -> Flow:
    out = []
    for sid in ("a", "b", "c"):
        out.append((yield Run(sid, counted, sid)))
    return out


abc = workflow("abc")(three_steps)
abc_timed = workflow("abc-timed", timeout="1h")(three_steps)


@workflow("deadline-then-step")
def deadline_then_step(ctx: Any) -> Flow:
    got = yield WaitFor("w", event="go", timeout="1h")
    yield Run("after", counted, "after")
    return {"w": got}


@workflow("kid")
def kid(ctx: Any) -> Flow:
    return {"kid": (yield WaitFor("w", event="go"))}


@workflow("broken-kid")
def broken_kid(ctx: Any) -> Flow:
    yield Run("explode", fail, "kid broke")


@workflow("parent")
def parent(ctx: Any) -> Flow:
    return (yield Child("c", kid))


@workflow("skipping-parent")
def skipping_parent(ctx: Any) -> Flow:
    got = yield Child("c", kid)
    later = yield WaitFor("later", event="more")
    return [got, later]


@workflow("careless-parent")
def careless_parent(ctx: Any) -> Flow:
    yield Child("c", broken_kid)  # ChildFailedError not caught
    return "unreachable"


@workflow("twins")
def twins(ctx: Any) -> Flow:
    return (yield All(Child("a", kid), Child("b", kid)))


@workflow("child-and-timer")
def child_and_timer(ctx: Any) -> Flow:
    got, _ = yield All(Child("c", kid), Delay("d", "1h"))
    return got


def nothing() -> None:
    CALLS["poll"] += 1


@workflow("event-and-poll")
def event_and_poll(ctx: Any) -> Flow:
    got, _ = yield All(WaitFor("w", event="go"), Poll("p", nothing, interval="1m"))
    return got


@workflow("fails-before-first-yield", retries=1)
def fails_before_first_yield(ctx: Any) -> Flow:
    missing = ctx.input["nope"]  # KeyError before any step
    yield Run("a", counted, missing)


NON_RETRYABLE = [
    pgflow.NonDeterminismError,
    pgflow.DuplicateStepError,
    pgflow.SerializationError,
    pgflow.WorkflowDefinitionError,
    pgflow.UnsupportedError,
]


BAD_DURATION = "soon"  # not a literal in the workflow: the decoration-time check cannot see it


@workflow("raises-non-retryable", retries=3)
def raises_non_retryable(ctx: Any) -> Flow:
    yield Run("a", counted, "a")
    if ctx.input == "bad-argument":  # a command built with a bad argument: a definition mistake
        yield Run("b", counted, "b", retry=Retry(initial=BAD_DURATION))
    raise getattr(pgflow, ctx.input)(f"workflow code raised {ctx.input}")


ALL = [awaiter, napper, one_step, flaky, abc, abc_timed, event_and_poll, deadline_then_step, kid, broken_kid, parent, skipping_parent,
       careless_parent, twins, child_and_timer, fails_before_first_yield, raises_non_retryable]  # fmt: skip


# -- both stores -------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A harness with every workflow of this module, on the in-memory store or on PostgreSQL."""
    CALLS.clear()
    dsn = schema = None
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    kw: dict[str, Any] = {"dsn": dsn, "schema": schema} if dsn else {}
    with Harness(workflows=ALL, clock=SimClock(T0), lease=LEASE, **kw) as harness:
        yield harness


def started(h: Harness, wf: Any, input: Any = None) -> str:
    run_id = h.start_workflow(wf, input).id
    h.run_until_idle()
    return run_id


def child_of(h: Harness, run_id: str, step_id: str = "c") -> str:
    output = h.get_run(run_id).timeline[step_id].output
    assert isinstance(output, dict)
    return str(output["child_run_id"])


def timed_out(run: pgflow.WorkflowRun, at: pendulum.DateTime) -> bool:
    return (
        run.status == "failed"
        and run.error is not None
        and run.error.type == "WorkflowTimeoutError"
        and run.completed_at == at
    )


def count_claims(h: Harness, run_id: str, limit: int = 5) -> Counter[str]:
    """Count how often the harness claims ``run_id``; more than ``limit`` claims fail fast (a busy loop)."""
    claims: Counter[str] = Counter()
    original = h.store.claim

    def claim(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        claims[run_id] += sum(c.run.id == run_id for c in found)
        if claims[run_id] > limit:
            raise AssertionError(f"run {run_id} claimed {claims[run_id]} times: a busy loop")
        return found

    h.store.claim = claim  # type: ignore[method-assign]
    return claims


# ======================================================================== cancelled stays cancelled


def test_fast_forward_leaves_a_cancelled_run_cancelled(h: Harness) -> None:
    """fast_forward_workflow on a cancelled run changes nothing: it stays cancelled, its wait unsettled."""
    run_id = started(h, awaiter)
    cancelled = h.cancel_workflow(run_id)
    assert h.fast_forward_workflow(run_id, {"late": True}) == cancelled
    h.advance("2h")
    run = h.get_run(run_id)
    assert run == cancelled and run.status == "cancelled" and run.timeline["w"].status == "waiting"


# ============================================================================== workflow timeouts


def test_timeout_fires_after_pause_and_resume_of_a_run_waiting_for_an_event(h: Harness) -> None:
    """A run held and released while it waits for an event still fails at its workflow timeout."""
    run_id = started(h, awaiter)
    h.advance("10m")
    h.pause_workflow(run_id)
    h.advance("10m")
    h.resume_workflow(run_id)
    assert h.get_run(run_id).wake_at == T0.add(hours=1)
    h.advance("2h")
    assert timed_out(h.get_run(run_id), T0.add(hours=1))


def test_timeout_fires_during_a_run_retry_backoff(h: Harness) -> None:
    """A run waiting out a retry backoff (1 h) longer than its timeout (10 min) fails at the timeout."""
    run_id = started(h, flaky)
    run = h.get_run(run_id)
    assert (run.status, run.retry_count, run.wake_at) == ("pending", 1, T0.add(hours=1))
    h.advance("2h")
    assert timed_out(h.get_run(run_id), T0.add(minutes=10)) and CALLS["boom"] == 1


def test_timeout_fires_during_a_run_retry_backoff_after_pause_and_resume(h: Harness) -> None:
    """Holding and releasing a run in its retry backoff keeps its workflow timeout."""
    run_id = started(h, flaky)
    h.advance("1m")
    h.pause_workflow(run_id)
    h.advance("1m")
    h.resume_workflow(run_id)
    h.advance("2h")
    assert timed_out(h.get_run(run_id), T0.add(minutes=10)) and CALLS["boom"] == 1


def test_timeout_fires_while_held(h: Harness) -> None:
    """A held run is not executed, but it still fails at its workflow timeout."""
    run_id = started(h, napper)
    h.pause_workflow(run_id)
    h.advance("1 day")
    assert timed_out(h.get_run(run_id), T0.add(hours=1))


def test_a_held_run_reaching_its_timeout_fails_once_without_a_busy_loop(h: Harness) -> None:
    """A held run claimed exactly at its timeout fails with WorkflowTimeoutError: claimed once, not spun."""
    run_id = h.start_workflow(one_step).id
    h.pause_workflow(run_id)
    claims = count_claims(h, run_id)
    h.advance("1h")  # the timeout falls due exactly at the end of the advance
    assert h.clock.now() == T0.add(hours=1)
    assert timed_out(h.get_run(run_id), T0.add(hours=1))
    assert claims[run_id] == 1 and CALLS["a"] == 0


# ====================================================================== completed records are final


def test_fast_forward_after_a_crash_does_not_rewrite_a_completed_step(h: Harness) -> None:
    """A WaitFor that timed out, then a crash: a later fast-forward leaves the timed-out record as it is."""
    run_id = started(h, deadline_then_step)
    h.crash_before("after")
    h.advance("1h")  # the WaitFor times out, "after" runs, and the worker dies before recording it
    crashed = h.get_run(run_id)
    assert crashed.status == "running" and CALLS["after"] == 1
    record = crashed.timeline["w"]
    assert record.status == "completed" and record.timed_out and record.output is None
    h.clock.advance("31s")  # past the dead worker's lease, nothing executed yet
    h.fast_forward_workflow(run_id, {"late": True})
    run = h.run_until_complete(run_id)
    assert run.timeline["w"] == record
    assert run.status == "completed" and run.output == {"w": None} and CALLS["after"] == 2


def test_a_child_ending_after_its_step_was_fast_forwarded_does_not_rewrite_it(h: Harness) -> None:
    """A Child step fast-forwarded keeps its record when the child ends later; the parent is not woken."""
    parent_id = started(h, skipping_parent)
    kid_id = child_of(h, parent_id)
    h.fast_forward_workflow(parent_id, {"skipped": True})
    h.run_until_idle()
    record = h.get_run(parent_id).timeline["c"]
    assert record.status == "completed" and record.output == {"skipped": True}
    h.advance("1m")
    h.trigger_event(kid_id, "go", {"n": 1})
    h.run_until_idle()
    assert h.get_run(kid_id).status == "completed"
    run = h.get_run(parent_id)
    assert run.timeline["c"] == record
    assert run.status == "paused" and run.waiting is not None and run.waiting.step_id == "later"
    h.trigger_event(parent_id, "more", {"n": 2})
    h.run_until_idle()
    assert h.get_run(parent_id).output == [{"skipped": True}, {"n": 2}]


# ============================================================================= held runs stay held


@pytest.mark.parametrize(("crash", "ran"), [("crash_before", {"a": 1, "b": 1}), ("crash_after", {"a": 1})])
def test_a_held_run_does_not_execute_after_its_dead_workers_lease_expires(
    h: Harness, crash: str, ran: dict[str, int]
) -> None:
    """A run held after its worker died stays held past the lease expiry: nothing runs until resumed."""
    getattr(h, crash)("b" if crash == "crash_before" else "a")
    run_id = started(h, abc)
    assert h.get_run(run_id).status == "running" and ran == CALLS
    before = h.pause_workflow(run_id).timeline
    h.advance("1h")
    run = h.get_run(run_id)
    completed = [sid for sid, rec in run.timeline.items() if rec.status == "completed"]
    assert (run.status, run.held, completed) == ("paused", True, ["a"])
    assert run.timeline == before and ran == CALLS  # nothing started, nothing recorded
    h.resume_workflow(run_id)
    assert h.run_until_complete(run_id).output == ["a", "b", "c"]
    assert {"a": 1, "b": ran.get("b", 0) + 1, "c": 1} == CALLS


def test_a_held_run_whose_dead_worker_lease_expired_still_times_out(h: Harness) -> None:
    """A held run taken back from a dead worker (and released at once) still fails at its timeout."""
    h.crash_before("b")
    run_id = started(h, abc_timed)
    h.pause_workflow(run_id)
    h.advance("31s")  # claimed after the lease expired, and given back: it is held
    run = h.get_run(run_id)
    assert (run.status, run.held) == ("paused", True) and CALLS == {"a": 1, "b": 1}
    h.advance("2h")
    assert timed_out(h.get_run(run_id), T0.add(hours=1)) and CALLS == {"a": 1, "b": 1}


# ========================================================================================= failures


@pytest.mark.parametrize("error", [*[cls.__name__ for cls in NON_RETRYABLE], "bad-argument"])
def test_non_retryable_errors_raised_by_workflow_code_are_not_retried(h: Harness, error: str) -> None:
    """NonDeterminism/DuplicateStep/Serialization/WorkflowDefinition/Unsupported errors raised by
    workflow code (or a command built with a bad argument) fail the run at once, retries unused."""
    run_id = started(h, raises_non_retryable, error)
    run = h.get_run(run_id)
    expected = "WorkflowDefinitionError" if error == "bad-argument" else error
    assert run.status == "failed" and run.error is not None and run.error.type == expected
    assert run.retry_count == 0 and CALLS == {"a": 1}


def test_an_exception_before_the_first_yield_is_reported_with_its_own_type(h: Harness) -> None:
    """Workflow code failing before its first yield fails the attempt with that exception's type."""
    run_id = h.start_workflow(fails_before_first_yield, {"other": 1}).id
    run = h.run_until_complete(run_id)
    assert run.status == "failed" and run.retry_count == 1 and run.timeline == {}
    assert run.error is not None
    assert (run.error.type, run.error.message, run.error.step_id) == ("KeyError", "'nope'", None)
    assert run.error.traceback is not None and "KeyError: 'nope'" in run.error.traceback


def test_an_uncaught_child_failure_fails_the_parent_and_other_runs_keep_running(h: Harness) -> None:
    """A parent not catching ChildFailedError fails with it (naming the child's error); nothing crashes."""
    parent_id = h.start_workflow(careless_parent).id
    other_id = h.start_workflow(napper).id
    h.run_until_idle()
    kid_id = child_of(h, parent_id)
    run = h.get_run(parent_id)
    assert h.get_run(kid_id).status == "failed" and run.status == "failed" and run.error is not None
    assert (run.error.type, run.error.step_id) == ("ChildFailedError", "c")
    assert run.error.message == f"child run {kid_id} (workflow 'broken-kid') failed: ValueError: kid broke"
    assert h.get_run(other_id).status == "paused"
    h.advance("30m")
    assert h.fast_forward_workflow(other_id).status == "pending"
    h.run_until_idle()
    assert h.get_run(other_id).output == "rested"


def test_cancelling_a_parent_with_two_live_children_cancels_both(h: Harness) -> None:
    """Cancelling a parent waiting on two live children cancels both and settles both Child steps."""
    parent_id = started(h, twins)
    kids = {child_of(h, parent_id, "a"), child_of(h, parent_id, "b")}
    bystander = started(h, kid)
    assert {h.get_run(k).status for k in kids} == {"paused"}
    assert h.cancel_workflow(parent_id).status == "cancelled"
    h.run_until_idle()
    assert {h.get_run(k).status for k in kids} == {"cancelled"}
    timeline = h.get_run(parent_id).timeline
    for sid in ("a", "b"):
        error = timeline[sid].error
        assert timeline[sid].status == "failed" and error is not None
        assert error.type == "ChildFailedError" and "cancelled" in error.message
    for k in kids:
        with pytest.raises(InvalidStateError):
            h.trigger_event(k, "go")
    h.trigger_event(bystander, "go", 1)
    h.run_until_idle()
    assert h.get_run(bystander).output == {"kid": 1} and h.get_run(parent_id).status == "cancelled"


# ========================================================= rules once found broken (bugs, now fixed)


def test_a_parent_held_while_its_child_ends_continues_after_resume(h: Harness) -> None:
    """SPEC §2/§4: a parent resumed after its child ended continues with the child's output."""
    parent_id = started(h, parent)
    kid_id = child_of(h, parent_id)
    h.pause_workflow(parent_id)
    h.trigger_event(kid_id, "go", {"n": 1})
    h.run_until_idle()
    assert h.get_run(kid_id).status == "completed"
    h.resume_workflow(parent_id)
    h.run_until_idle()
    assert h.get_run(parent_id).output == {"kid": {"n": 1}}  # today: paused at "c" forever, nothing due


def commit_hook(h: Harness, before: Callable[[Any], None]) -> None:
    """Call ``before(batch)`` before each commit the harness's worker makes (then commit as usual)."""
    original = h.store.commit

    def commit(lease: Any, now: Any, duration: Any, batch: Any, transaction: Any = None) -> Any:
        before(batch)
        return original(lease, now, duration, batch, transaction)

    h.store.commit = commit  # type: ignore[method-assign,assignment]


def test_a_child_ending_while_its_parent_executes_wakes_the_parent(h: Harness) -> None:
    """SPEC §2: a child that ends while a worker holds its parent (All(Child, Delay) at the Delay's time)
    still wakes the parent; today the parent's suspend is accepted and it waits for good."""
    parent_id = started(h, child_and_timer)
    kid_id = child_of(h, parent_id)
    fired: list[bool] = []

    def kid_ends_first(batch: Any) -> None:
        if isinstance(batch.outcome, SuspendRun) and not fired:
            fired.append(True)
            h.trigger_event(kid_id, "go", {"n": 1})
            h.run_until_idle()  # the kid completes (its parent is leased, so only the kid is claimed)

    commit_hook(h, kid_ends_first)
    h.advance("1h")
    assert fired and h.get_run(kid_id).status == "completed"
    assert h.get_run(parent_id).output == {"kid": {"n": 1}}


def test_resuming_a_run_waiting_at_an_all_keeps_its_other_timers(h: Harness) -> None:
    """SPEC §2/§4: after pause + resume, a run at All(WaitFor, Poll) keeps polling every interval
    (today it only remembers the WaitFor: wake_at None, no poll until the event arrives)."""
    run_id = started(h, event_and_poll)
    h.advance("2m")
    assert CALLS["poll"] == 3
    h.pause_workflow(run_id)
    h.resume_workflow(run_id)
    assert h.get_run(run_id).wake_at == T0.add(minutes=3)
    h.advance("2m")
    assert CALLS["poll"] == 5


def test_a_cancelled_run_reports_no_wait(h: Harness) -> None:
    """SPEC §4: ``waiting`` is set only while the run is suspended at a step."""
    run_id = started(h, awaiter)
    assert h.cancel_workflow(run_id).waiting is None


def test_a_running_run_reports_no_wait(h: Harness) -> None:
    """SPEC §3/§4: a run whose worker executes it (here: died while executing it) is not waiting."""
    run_id = started(h, deadline_then_step)
    h.crash_before("after")
    h.advance("1h")
    run = h.get_run(run_id)
    assert run.status == "running" and run.waiting is None
