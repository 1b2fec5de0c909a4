"""``retry_workflow`` (SPEC §14): re-driving a failed or cancelled run, on the in-memory Harness and
the Postgres one alike, through a real Engine and the AsyncClient, and from the dashboard."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import All, Child, Pause, Retry, Run, StepFailedError, WaitFor, workflow
from pgflow.testing import Harness, SimClock

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


@pytest.fixture
def make_harness(harness_on_both_stores: Callable[..., Harness]) -> Callable[..., Harness]:
    return functools.partial(harness_on_both_stores)


class Steps:
    """Step functions that count their calls and fail, with a ValueError, while their name is broken."""

    def __init__(self, *broken: str) -> None:
        self.calls: Counter[str] = Counter()
        self.broken = set(broken)

    def __call__(self, name: str, *args: Any) -> str:
        self.calls[name] += 1
        if name in self.broken:
            raise ValueError(f"bug in {name}")
        return name.upper()

    def fix(self) -> None:
        self.broken.clear()


def three_steps(steps: Steps, **options: Any) -> pgflow.Workflow:
    @workflow("three-steps", **options)
    def wf(ctx: Any) -> Flow:
        a = yield Run("a", steps, "a")
        b = yield Run("b", steps, "b")
        c = yield Run("c", steps, "c")
        return a + b + c

    return wf


# -- failed runs ---------------------------------------------------------------------------------------


def test_a_fixed_run_retried_executes_only_the_failed_step(make_harness: Any) -> None:
    """Failed at step 3, fixed, retried: pending and clean; steps 1-2 replayed, step 3 runs again."""
    steps = Steps("c")
    h = make_harness(three_steps(steps, retries=1))
    run = h.run_until_complete(h.start_workflow("three-steps").id)
    assert run.status == "failed" and run.retry_count == 1 and run.error.type == "ValueError"
    assert steps.calls == {"a": 1, "b": 1, "c": 2}
    steps.fix()
    retried = h.retry_workflow(run.id)
    assert (retried.status, retried.error, retried.completed_at, retried.retry_count) == (
        "pending",
        None,
        None,
        0,
    )
    assert list(retried.timeline) == ["a", "b"]
    done = h.run_until_complete(run.id)
    assert done.status == "completed" and done.output == "ABC" and done.error is None
    assert steps.calls == {"a": 1, "b": 1, "c": 3}
    assert [(s.step_id, s.seq, s.attempts) for s in done.timeline.values()] == [
        ("a", 1, 1),
        ("b", 2, 1),
        ("c", 3, 1),
    ]


def test_a_retried_run_has_its_run_retries_again(make_harness: Any) -> None:
    """A run retried while still broken uses its whole run-retry budget again before failing again."""
    steps = Steps("c")
    h = make_harness(three_steps(steps, retries=2))
    run_id = h.start_workflow("three-steps").id
    assert h.run_until_complete(run_id).retry_count == 2
    h.retry_workflow(run_id)
    again = h.run_until_complete(run_id)
    assert again.status == "failed" and again.retry_count == 2 and steps.calls == {"a": 1, "b": 1, "c": 6}


def test_from_step_executes_that_step_and_every_later_one_again(make_harness: Any) -> None:
    """from_step re-executes the named step and every step after it; earlier ones are replayed."""
    steps = Steps("d")

    @workflow("four-steps")
    def wf(ctx: Any) -> Flow:
        for name in "abcd":
            yield Run(name, steps, name)

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    assert h.run_until_complete(run_id).status == "failed"
    steps.fix()
    assert list(h.retry_workflow(run_id, from_step="b").timeline) == ["a"]
    done = h.run_until_complete(run_id)
    assert done.status == "completed" and steps.calls == {"a": 1, "b": 2, "c": 2, "d": 2}
    assert [(s.step_id, s.seq) for s in done.timeline.values()] == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]


def test_from_step_gives_a_wait_for_its_event_back(make_harness: Any) -> None:
    """A WaitFor re-executed by from_step takes the event it had consumed again, with the same data."""
    steps = Steps("use")

    @workflow("approve-then-use")
    def wf(ctx: Any) -> Flow:
        approval = yield WaitFor("approval", event="approved")
        yield Run("use", steps, "use", approval)
        return approval

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    h.run_until_idle()
    h.trigger_event(run_id, "approved", {"by": "ops"})
    assert h.run_until_complete(run_id).status == "failed" and h.get_mailbox(run_id) == []
    steps.fix()
    h.retry_workflow(run_id, from_step="approval")
    assert [(e.name, e.data) for e in h.get_mailbox(run_id)] == [("approved", {"by": "ops"})]
    done = h.run_until_complete(run_id)
    assert done.status == "completed" and done.output == {"by": "ops"} and h.get_mailbox(run_id) == []


def test_a_timed_out_run_retried_gets_a_fresh_deadline(make_harness: Any) -> None:
    """A timed-out run retried a day later gets its timeout again from the retry, and can complete."""

    @workflow("slow-approval", timeout="1h")
    def wf(ctx: Any) -> Flow:
        return (yield WaitFor("approval", event="approved"))

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    failed = h.run_until_complete(run_id)
    assert failed.error.type == "WorkflowTimeoutError" and failed.timeout_at == T0.add(hours=1)
    h.clock.advance("1d")
    assert h.retry_workflow(run_id).timeout_at == h.clock.now().add(hours=1)
    h.run_until_idle()
    assert h.get_run(run_id).status == "paused"
    h.trigger_event(run_id, "approved", {"ok": True})
    assert h.run_until_complete(run_id).output == {"ok": True}


def test_a_failed_step_of_an_all_is_retried_at_its_place(make_harness: Any) -> None:
    """A failed step of an All runs again at its seq; its completed sibling is replayed."""
    steps = Steps("x")

    @workflow("fan-out")
    def wf(ctx: Any) -> Flow:
        yield Run("prepare", steps, "prepare")
        return (yield All(Run("x", steps, "x"), Run("y", steps, "y")))

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    assert h.run_until_complete(run_id).status == "failed"
    steps.fix()
    h.retry_workflow(run_id)
    done = h.run_until_complete(run_id)
    assert done.status == "completed" and done.output == ["X", "Y"]
    assert steps.calls == {"prepare": 1, "x": 2, "y": 1}
    assert [(s.step_id, s.seq) for s in done.timeline.values()] == [("prepare", 1), ("x", 2), ("y", 3)]


@pytest.mark.parametrize("primary_fixed", [True, False], ids=["now-succeeds", "still-fails"])
def test_a_caught_failure_is_retried_and_the_path_after_it_follows(
    make_harness: Any, primary_fixed: bool
) -> None:
    """A caught failure runs again; its fallback is dropped if it now succeeds, else replayed."""
    steps = Steps("primary", "finish")

    @workflow("with-fallback")
    def wf(ctx: Any) -> Flow:
        try:
            value = yield Run("primary", steps, "primary")
        except StepFailedError:
            value = yield Run("fallback", steps, "fallback")
        yield Run("finish", steps, "finish")
        return value

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    assert h.run_until_complete(run_id).error.step_id == "finish"
    steps.broken = set() if primary_fixed else {"primary"}  # "finish" is fixed either way
    h.retry_workflow(run_id)
    done = h.run_until_complete(run_id)
    path = (
        ("PRIMARY", ["primary", "finish"])
        if primary_fixed
        else ("FALLBACK", ["primary", "fallback", "finish"])
    )
    assert (done.output, list(done.timeline)) == path
    assert steps.calls == {"primary": 2, "fallback": 1, "finish": 2}


@pytest.mark.postgres
def test_from_step_re_drives_a_run_stopped_by_a_code_change(pg_dsn: str, pg_schema: str) -> None:
    """A run stopped by a NonDeterminismError after a deploy goes on, on the new code, from the step named."""
    steps = Steps()

    def v1(ctx: Any) -> Flow:
        yield Run("charge", steps, "charge")
        yield Run("email", steps, "email")
        return (yield WaitFor("approve", event="approved"))

    def v2(ctx: Any) -> Flow:
        yield Run("charge", steps, "charge")
        yield Run("fraud-check", steps, "fraud-check")  # inserted before the point the run reached
        yield Run("email", steps, "email")
        return (yield WaitFor("approve", event="approved"))

    with Harness([workflow("order")(v1)], dsn=pg_dsn, schema=pg_schema, clock=SimClock(T0)) as h:
        run_id = h.start_workflow("order").id
        h.run_until_idle()
    with Harness([workflow("order")(v2)], dsn=pg_dsn, schema=pg_schema, clock=SimClock(T0)) as h:
        h.trigger_event(run_id, "approved", {"ok": True})
        h.run_until_idle()
        stopped = h.get_run(run_id)
        assert stopped.error.type == "NonDeterminismError" and "'email' (run, seq 2)" in stopped.error.message
        h.retry_workflow(run_id, from_step="email")
        done = h.run_until_complete(run_id)
    assert done.output == {"ok": True} and list(done.timeline) == [
        "charge",
        "fraud-check",
        "email",
        "approve",
    ]
    assert steps.calls == {"charge": 1, "fraud-check": 1, "email": 2}


# -- cancelled runs -----------------------------------------------------------------------------------


def test_a_cancelled_run_retried_sees_the_events_no_step_consumed(make_harness: Any) -> None:
    """A cancelled run, retried, stops at its Pause again, then its WaitFor takes the buffered event."""
    steps = Steps()

    @workflow("hold-then-approve")
    def wf(ctx: Any) -> Flow:
        yield Run("prepare", steps, "prepare")
        yield Pause("hold")
        return (yield WaitFor("approval", event="approved"))

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    h.run_until_idle()
    h.trigger_event(run_id, "approved", {"by": "ops"})
    assert h.cancel_workflow(run_id).status == "cancelled"
    retried = h.retry_workflow(run_id)
    assert (
        retried.status == "pending" and retried.completed_at is None and list(retried.timeline) == ["prepare"]
    )
    h.run_until_idle()
    assert h.get_run(run_id).waiting.kind == "pause"
    h.resume_workflow(run_id)
    done = h.run_until_complete(run_id)
    assert done.output == {"by": "ops"} and steps.calls == {"prepare": 1} and h.get_mailbox(run_id) == []


def test_a_wait_cut_short_by_a_cancel_starts_afresh(make_harness: Any) -> None:
    """A WaitFor cut short by a cancel waits its full timeout again from the retry."""

    @workflow("await-go")
    def wf(ctx: Any) -> Flow:
        return (yield WaitFor("go", event="go", timeout="1h"))

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    h.advance("30m")
    h.cancel_workflow(run_id)
    h.clock.advance("2h")
    h.retry_workflow(run_id)
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "paused" and run.wake_at == h.clock.now().add(hours=1)
    assert run.timeline["go"].started_at == h.clock.now()
    h.trigger_event(run_id, "go", {"n": 1})
    assert h.run_until_complete(run_id).output == {"n": 1}


def test_a_step_cut_short_in_its_retry_backoff_starts_its_attempts_afresh(make_harness: Any) -> None:
    """A Run step cancelled while waiting to retry (2 attempts used of 3) has all its attempts again."""
    steps = Steps("flaky")

    @workflow("flaky-step")
    def wf(ctx: Any) -> Flow:
        return (yield Run("flaky", steps, "flaky", retry=Retry(max_attempts=3, initial="1h", jitter=0)))

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    h.advance("1h")
    assert h.get_run(run_id).timeline["flaky"].attempts == 2
    h.cancel_workflow(run_id)
    h.retry_workflow(run_id)
    failed = h.run_until_complete(run_id)
    assert failed.status == "failed" and failed.timeline["flaky"].attempts == 3 and steps.calls["flaky"] == 5


# -- children -----------------------------------------------------------------------------------------


@workflow("awaiter")
def awaiter(ctx: Any) -> Flow:
    return (yield WaitFor("ok", event="ok"))


def parent_of_awaiter(**options: Any) -> pgflow.Workflow:
    @workflow("awaiter-parent", **options)
    def parent(ctx: Any) -> Flow:
        return (yield Child("spawn", awaiter))

    return parent


def finish_children(h: Harness, run_id: str) -> pgflow.WorkflowRun:
    """Send "ok" to the parent's live children, then run the parent to its end."""
    h.run_until_idle()
    for kid in h.get_child_runs(run_id):
        if kid.status not in pgflow.TERMINAL:
            h.trigger_event(kid.id, "ok", {"from": kid.id})
    return h.run_until_complete(run_id)


def test_a_cancelled_parent_retried_starts_a_new_child(make_harness: Any) -> None:
    """A cancelled parent, retried, starts a new child and completes; the old child stays cancelled."""
    h = make_harness(parent_of_awaiter(), awaiter)
    run_id = h.start_workflow("awaiter-parent").id
    h.run_until_idle()
    h.cancel_workflow(run_id)
    h.clock.advance("1m")  # the two children sort by creation time
    h.retry_workflow(run_id)
    done = finish_children(h, run_id)
    old, new = h.get_child_runs(run_id)
    assert (old.status, new.status) == ("cancelled", "completed") and done.output == {"from": new.id}


def test_a_parent_retried_while_its_child_runs_waits_for_that_child(make_harness: Any) -> None:
    """A parent that timed out while its child runs, retried, waits for that same child."""
    h = make_harness(parent_of_awaiter(timeout="30m"), awaiter)
    run_id = h.start_workflow("awaiter-parent").id
    h.advance("30m")
    assert h.get_run(run_id).error.type == "WorkflowTimeoutError"
    h.retry_workflow(run_id)
    done = finish_children(h, run_id)
    (kid,) = h.get_child_runs(run_id)
    assert kid.status == "completed" and done.output == {"from": kid.id}


def test_from_a_child_step_cancels_the_child_and_starts_a_new_one(make_harness: Any) -> None:
    """from_step naming a Child step whose child still runs cancels that child and starts another."""
    h = make_harness(parent_of_awaiter(timeout="30m"), awaiter)
    run_id = h.start_workflow("awaiter-parent").id
    h.advance("30m")
    h.retry_workflow(run_id, from_step="spawn")
    done = finish_children(h, run_id)
    old, new = h.get_child_runs(run_id)
    assert (old.status, new.status) == ("cancelled", "completed") and done.output == {"from": new.id}


# -- refusals -------------------------------------------------------------------------------------------


def test_only_failed_and_cancelled_runs_can_be_retried(make_harness: Any) -> None:
    """Pending, running, paused, held and completed runs raise InvalidStateError and stay as they were."""
    seen: dict[str, Any] = {}

    def try_retry_while_running() -> str:
        try:
            h.retry_workflow(seen["run"])
        except pgflow.InvalidStateError as exc:
            seen["running"] = exc
        return "ran"

    @workflow("retry-too-early")
    def wf(ctx: Any) -> Flow:
        yield Run("busy", try_retry_while_running)
        return (yield WaitFor("go", event="go"))

    h = make_harness(wf)
    seen["run"] = run_id = h.start_workflow(wf).id
    states = {"pending": lambda: None, "paused": h.run_until_idle}
    for status, reach in states.items():
        reach()
        before = h.get_run(run_id)
        with pytest.raises(pgflow.InvalidStateError, match=f"cannot retry run {run_id} .*it is {status};"):
            h.retry_workflow(run_id)
        assert h.get_run(run_id) == before
    assert "it is running;" in str(seen["running"])
    h.pause_workflow(run_id)
    with pytest.raises(pgflow.InvalidStateError, match="it is paused and held; only a failed or cancelled"):
        h.retry_workflow(run_id)
    h.resume_workflow(run_id)
    h.trigger_event(run_id, "go")
    assert h.run_until_complete(run_id).status == "completed"
    with pytest.raises(pgflow.InvalidStateError, match="it is completed"):
        h.retry_workflow(run_id)


def test_from_step_without_a_record_is_refused(make_harness: Any) -> None:
    """from_step naming a step without record is an InvalidArgumentError; the run stays failed."""
    h = make_harness(three_steps(Steps("b")))
    run_id = h.run_until_complete(h.start_workflow("three-steps").id).id
    before = h.get_run(run_id)
    with pytest.raises(pgflow.InvalidArgumentError, match=r"from_step 'c': .*recorded: 'a', 'b'"):
        h.retry_workflow(run_id, from_step="c")
    assert h.get_run(run_id) == before


def test_another_tenants_run_is_not_found(make_harness: Any) -> None:
    """With resource_id, a run of another resource is reported as missing; its own resource may retry."""
    h = make_harness(three_steps(Steps("a")))
    run_id = h.start_workflow("three-steps", resource_id="tenant-a").id
    h.run_until_complete(run_id)
    with pytest.raises(pgflow.RunNotFoundError, match="tenant-b"):
        h.retry_workflow(run_id, resource_id="tenant-b")
    assert h.get_run(run_id).status == "failed"
    assert h.retry_workflow(run_id, resource_id="tenant-a").status == "pending"


# -- a real Engine, the AsyncClient, the dashboard -------------------------------------------------------


@pytest.mark.postgres
def test_an_engine_re_drives_a_fixed_run(pg_dsn: str, pg_schema: str) -> None:
    """On a real Engine a fixed run, retried, completes without executing its completed steps again."""
    steps = Steps("c")
    wf = three_steps(steps)
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[wf], concurrency=2) as engine:
        run = engine.start_workflow(wf)
        assert engine.wait_for_run(run.id, timeout="20s").status == "failed"
        steps.fix()
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            assert client.retry_workflow(run.id).status in ("pending", "running", "completed")
            done = client.wait_for_run(run.id, timeout="20s")
    assert done.status == "completed" and done.output == "ABC" and steps.calls == {"a": 1, "b": 1, "c": 2}


@pytest.mark.postgres
def test_the_async_client_retries(pg_dsn: str, pg_schema: str) -> None:
    """AsyncClient.retry_workflow re-drives a run like the Client's (from_step included)."""
    steps = Steps("c")
    with Harness([three_steps(steps)], dsn=pg_dsn, schema=pg_schema, clock=SimClock(T0)) as h:
        run_id = h.run_until_complete(h.start_workflow("three-steps").id).id
        steps.fix()

        async def retry() -> pgflow.WorkflowRun:
            async with pgflow.AsyncClient(pg_dsn, schema=pg_schema, clock=h.clock) as client:
                return await client.retry_workflow(run_id, from_step="b")

        assert list(asyncio.run(retry()).timeline) == ["a"]
        assert h.run_until_complete(run_id).status == "completed" and steps.calls == {"a": 1, "b": 2, "c": 2}


def test_the_dashboard_retry_button_re_drives_the_run() -> None:
    """A failed run's page offers Retry; pressing it makes the run pending, and it then completes."""
    from starlette.testclient import TestClient

    from dashboard_support import csrf_token
    from pgflow.dashboard import create_app

    steps = Steps("c")
    with Harness([three_steps(steps)], clock=SimClock(T0)) as h:
        run_id = h.run_until_complete(h.start_workflow("three-steps").id).id
        steps.fix()
        tc = TestClient(create_app(h))
        page = tc.get(f"/runs/{run_id}").text
        assert f'/runs/{run_id}/retry"' in page
        form = {"csrf_token": csrf_token(page)}
        response = tc.post(f"/runs/{run_id}/retry", data=form, follow_redirects=False)
        assert response.status_code == 303 and h.get_run(run_id).status == "pending"
        assert h.run_until_complete(run_id).status == "completed" and steps.calls["a"] == 1
