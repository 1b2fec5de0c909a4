"""The client methods (SPEC §1 input, §3–§4, §8) and the harness itself (SPEC §11), in memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import attrs
import pendulum
import pytest

import pgflow
from pgflow import (
    Delay,
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidInputError,
    InvalidStateError,
    Pause,
    Poll,
    PollResult,
    Run,
    RunNotFoundError,
    UnknownWorkflowError,
    WaitFor,
    WaitUntil,
    workflow,
)
from pgflow.testing import Harness, SimClock

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
LONG = "x" * 257


@attrs.frozen
class Signup:
    email: str
    plan: str = "free"
    score: float = 0.0


@dataclasses.dataclass
class Order:
    sku: str
    qty: int = 1


@workflow("signup", input=Signup)
def signup_wf(ctx: pgflow.Context[Signup]) -> Flow:
    yield Run("echo", lambda: None)
    return {"email": ctx.input.email, "plan": ctx.input.plan, "score": ctx.input.score}


@workflow("order", input=Order)
def order_wf(ctx: pgflow.Context[Order]) -> Flow:
    yield Run("echo", lambda: None)
    return {"type": type(ctx.input).__name__, "sku": ctx.input.sku, "qty": ctx.input.qty}


def positive(raw: Any) -> int:
    if not isinstance(raw, int) or raw <= 0:
        raise ValueError(f"expected a positive int, got {raw!r}")
    return raw * 2


@workflow("doubled", input=positive)
def doubled_wf(ctx: Any) -> Flow:
    yield Run("echo", lambda: None)
    return ctx.input


@workflow("untyped")
def untyped_wf(ctx: Any) -> Flow:
    yield Run("echo", lambda: None)
    return ctx.input


@workflow("gate")
def gate_wf(ctx: Any) -> Flow:
    """Waits at every kind of step in turn, returning what each yielded."""
    got = yield WaitFor("approve", event="approved")
    yield Delay("cool-off", "1h")
    polled = yield Poll("check", lambda: None, interval="1h")
    yield Pause("confirm")
    return {"got": got, "polled": [polled.timed_out, polled.data]}


@workflow("napper")
def napper_wf(ctx: Any) -> Flow:
    yield Delay("nap", "1h")
    return "rested"


@workflow("waiter")
def waiter_wf(ctx: Any) -> Flow:
    return (yield WaitFor("w", event="go"))


@workflow("pauser")
def pauser_wf(ctx: Any) -> Flow:
    yield Pause("p")
    return "resumed"


ALL = [signup_wf, order_wf, doubled_wf, untyped_wf, gate_wf, napper_wf, waiter_wf, pauser_wf]


@pytest.fixture
def clock() -> SimClock:
    """A simulated clock at a fixed, round start time."""
    return SimClock(T0)


@pytest.fixture
def h(clock: SimClock) -> Harness:
    """A harness with every workflow of this module registered."""
    with Harness(workflows=ALL, clock=clock) as harness:
        yield harness  # type: ignore[misc]


def started(h: Harness, wf: Any, input: Any = None, **kwargs: Any) -> str:
    run = h.start_workflow(wf, input, **kwargs)
    h.run_until_idle()
    return run.id


def no_runs(h: Harness) -> bool:
    return h.get_runs(limit=100).items == []


# ================================================================================ the harness


def test_harness_has_a_sim_clock_by_default() -> None:
    """``Harness()`` creates its own SimClock, reachable as ``h.clock``."""
    with Harness() as harness:
        assert isinstance(harness.clock, SimClock)


def test_sim_clock_moves_only_when_told(clock: SimClock) -> None:
    """SimClock's ``advance`` and ``set`` move it; it never goes back."""
    assert clock.now() == T0
    assert clock.advance("90m") == T0.add(minutes=90)
    assert clock.set(T0.add(days=1)) == T0.add(days=1)
    with pytest.raises(ValueError):
        clock.set(T0)


def test_start_returns_a_pending_run(h: Harness) -> None:
    """``start_workflow`` returns the run ``pending``, created at the clock's time."""
    run = h.start_workflow("untyped", {"a": 1})
    assert (run.status, run.workflow_id, run.input, run.created_at) == ("pending", "untyped", {"a": 1}, T0)
    assert run.timeline == {} and run.retry_count == 0 and not run.held


def test_start_accepts_a_workflow_object(h: Harness) -> None:
    """``start_workflow`` takes a Workflow as well as its id."""
    assert h.start_workflow(untyped_wf).workflow_id == "untyped"


def test_unknown_workflow_id(h: Harness) -> None:
    """Starting an unregistered workflow id raises UnknownWorkflowError naming it."""
    with pytest.raises(UnknownWorkflowError, match="nope"):
        h.start_workflow("nope")


def test_registering_another_definition_with_same_id_fails(h: Harness) -> None:
    """A different definition under a registered id is a WorkflowDefinitionError; the same one is a no-op."""
    h.register(napper_wf)

    @workflow("napper")
    def impostor(ctx: Any) -> Flow:
        yield Run("x", lambda: 1)

    with pytest.raises(pgflow.WorkflowDefinitionError):
        h.register(impostor)


def test_run_until_idle_runs_all_ready_work(h: Harness) -> None:
    """``run_until_idle`` executes every ready run as far as it can go now."""
    ids = [h.start_workflow("untyped", i).id for i in range(3)]
    h.run_until_idle()
    assert [h.get_run(i).output for i in ids] == [0, 1, 2]


def test_run_until_complete_skips_timers(h: Harness, clock: SimClock) -> None:
    """``run_until_complete`` jumps from timer to timer until the run ends."""
    run = h.run_until_complete(h.start_workflow("napper").id)
    assert run.status == "completed" and clock.now() == T0.add(hours=1)


def test_run_until_complete_refuses_to_wait_for_an_event(h: Harness) -> None:
    """``run_until_complete`` raises when the run waits for something only a client can send."""
    with pytest.raises(RuntimeError, match=r"event 'go'.*trigger_event"):
        h.run_until_complete(h.start_workflow("waiter").id)


def test_advance_fires_each_timer_at_its_time(h: Harness, clock: SimClock) -> None:
    """``advance`` fires a due timer at its own time, not at the end of the jump."""
    run_id = started(h, "napper")
    h.advance("1 day")
    run = h.get_run(run_id)
    assert run.completed_at == T0.add(hours=1) and clock.now() == T0.add(days=1)


def test_wait_for_run_moves_simulated_time(h: Harness, clock: SimClock) -> None:
    """``wait_for_run`` runs work and timers until the run is terminal."""
    run_id = h.start_workflow("napper").id
    run = h.wait_for_run(run_id, timeout="2h")
    assert run.status == "completed" and clock.now() == T0.add(hours=1)


def test_wait_for_run_until_given_statuses(h: Harness) -> None:
    """``until`` accepts statuses as strings."""
    run_id = h.start_workflow("waiter").id
    assert h.wait_for_run(run_id, until=["paused"]).status == "paused"


def test_wait_for_run_times_out(h: Harness, clock: SimClock) -> None:
    """``wait_for_run`` raises TimeoutError when the run is not done within ``timeout``."""
    run_id = h.start_workflow("napper").id
    with pytest.raises(TimeoutError, match=run_id):
        h.wait_for_run(run_id, timeout="30m")
    assert clock.now() == T0.add(minutes=30)


# ================================================================================ fault injection


def _counting_workflow(name: str, calls: dict[str, int]) -> pgflow.Workflow:
    def step(sid: str) -> str:
        calls[sid] = calls.get(sid, 0) + 1
        return sid

    def fn(ctx: Any) -> Flow:
        out = []
        for sid in ("a", "b", "c"):
            out.append((yield Run(sid, step, sid)))
        return out

    fn.__name__ = name
    return workflow(name)(fn)


def test_crash_before_leaves_step_unrecorded_until_lease_expiry(clock: SimClock) -> None:
    """``crash_before``: the step runs but its outcome is lost (its record stays ``running``, as its
    start was recorded); after the lease expires it runs again, and that attempt counts as the 2nd."""
    calls: dict[str, int] = {}
    wf = _counting_workflow("crash_before", calls)
    h = Harness(workflows=[wf], clock=clock, lease="30s")
    h.crash_before("b")
    run_id = started(h, wf)
    run = h.get_run(run_id)
    assert run.status == "running" and list(run.timeline) == ["a", "b"] and calls == {"a": 1, "b": 1}
    assert run.timeline["b"].status == "running" and run.timeline["b"].attempts == 1
    assert run.current_step_id == "b"
    h.advance("29s")
    assert h.get_run(run_id).status == "running" and calls["b"] == 1
    h.advance("1s")
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == ["a", "b", "c"]
    assert calls == {"a": 1, "b": 2, "c": 1}  # at least once: b re-ran, a (recorded) did not
    assert run.timeline["b"].attempts == 2


def test_crash_after_does_not_rerun_recorded_step(clock: SimClock) -> None:
    """After ``crash_after`` the step's outcome is recorded, so recovery does not run it again."""
    calls: dict[str, int] = {}
    wf = _counting_workflow("crash_after", calls)
    h = Harness(workflows=[wf], clock=clock)
    h.crash_after("b")
    run_id = started(h, wf)
    run = h.get_run(run_id)
    assert run.status == "running" and run.timeline["b"].status == "completed" and "c" not in calls
    # b's outcome went out with c's start, in one statement: c is recorded as starting, not run yet
    assert run.timeline["c"].status == "running" and run.timeline["c"].attempts == 1
    run = h.run_until_complete(run_id)
    assert run.output == ["a", "b", "c"] and calls == {"a": 1, "b": 1, "c": 1}
    assert clock.now() == T0.add(seconds=30)


def test_crash_is_one_shot(clock: SimClock) -> None:
    """A crash point fires on the next execution only: the step ran, was lost, and the recovery
    runs it once more without crashing again."""
    calls: dict[str, int] = {}
    wf = _counting_workflow("crash_once", calls)
    h = Harness(workflows=[wf], clock=clock, lease="5s")
    h.crash_before("a")
    run_id = started(h, wf)
    assert h.get_run(run_id).timeline["a"].status == "running" and calls == {"a": 1}
    h.advance("5s")
    assert h.get_run(run_id).status == "completed" and calls == {"a": 2, "b": 1, "c": 1}


# ================================================================================ input validation


def test_attrs_input_is_structured_and_defaults_stored(h: Harness) -> None:
    """An attrs input is structured; defaults apply and the validated value is stored."""
    run = h.start_workflow("signup", {"email": "a@b.c"})
    assert run.input == {"email": "a@b.c", "plan": "free", "score": 0.0}
    done = h.run_until_complete(run.id)
    assert done.output == {"email": "a@b.c", "plan": "free", "score": 0.0}


def test_attrs_instance_input_accepted(h: Harness) -> None:
    """An instance of the input class is accepted as is."""
    run = h.start_workflow("signup", Signup("z@y.x", "pro"))
    assert run.input == {"email": "z@y.x", "plan": "pro", "score": 0.0}


def test_attrs_input_is_strict(h: Harness) -> None:
    """A value of the wrong type is rejected, never coerced; ``.errors`` names the field; nothing is stored."""
    with pytest.raises(InvalidInputError) as info:
        h.start_workflow("signup", {"email": 123})
    assert info.value.errors and any("email" in e for e in info.value.errors)
    assert no_runs(h)


def test_int_for_float_field_is_fine(h: Harness) -> None:
    """An ``int`` for a ``float`` field is accepted."""
    run = h.start_workflow("signup", {"email": "a@b.c", "score": 3})
    assert run.input["score"] == 3.0


def test_missing_required_field_is_rejected(h: Harness) -> None:
    """A missing required field is an InvalidInputError naming it."""
    with pytest.raises(InvalidInputError) as info:
        h.start_workflow("signup", {"plan": "pro"})
    assert any("email" in e for e in info.value.errors)
    assert no_runs(h)


def test_each_bad_field_is_listed(h: Harness) -> None:
    """Every bad field gets its own entry in ``.errors``."""
    with pytest.raises(InvalidInputError) as info:
        h.start_workflow("signup", {"email": 1, "plan": 2})
    joined = " | ".join(info.value.errors)
    assert "email" in joined and "plan" in joined and len(info.value.errors) >= 2


def test_dataclass_input(h: Harness) -> None:
    """A dataclass input is structured strictly; ``ctx.input`` is an instance."""
    run = h.run_until_complete(h.start_workflow("order", {"sku": "s-1"}).id)
    assert run.output == {"type": "Order", "sku": "s-1", "qty": 1}
    with pytest.raises(InvalidInputError) as info:
        h.start_workflow("order", {"sku": "s-1", "qty": "2"})
    assert any("qty" in e for e in info.value.errors)


def test_callable_input_validator(h: Harness) -> None:
    """A callable schema's return value is what gets stored; raising rejects the input."""
    run = h.start_workflow("doubled", 21)
    assert run.input == 42
    with pytest.raises(InvalidInputError) as info:
        h.start_workflow("doubled", -1)
    assert info.value.errors and "positive" in info.value.errors[0]
    assert len(h.get_runs().items) == 1


def test_untyped_input_must_be_json(h: Harness) -> None:
    """Without ``input=`` the input must be JSON-serialisable."""
    with pytest.raises(InvalidInputError):
        h.start_workflow("untyped", {"when": object()})
    assert no_runs(h)


# =========================================================================== pause / resume / held


def test_pause_pending_run_holds_it(h: Harness, clock: SimClock) -> None:
    """A paused pending run is held: nothing executes until it is resumed."""
    run_id = h.start_workflow("napper").id
    run = h.pause_workflow(run_id)
    assert (run.status, run.held, run.paused_at) == ("paused", True, T0)
    h.advance("2h")
    run = h.get_run(run_id)
    assert run.status == "paused" and run.timeline == {}
    resumed = h.resume_workflow(run_id)
    assert not resumed.held and resumed.resumed_at == clock.now()
    h.run_until_idle()
    assert h.get_run(run_id).status == "paused"  # now waiting at its own Delay
    h.advance("1h")
    assert h.get_run(run_id).status == "completed"


def test_pause_twice_is_invalid(h: Harness) -> None:
    """Pausing a run that is already held raises InvalidStateError."""
    run_id = h.start_workflow("napper").id
    h.pause_workflow(run_id)
    with pytest.raises(InvalidStateError, match="already"):
        h.pause_workflow(run_id)


def test_pause_terminal_run_is_invalid(h: Harness) -> None:
    """Pausing a completed run raises InvalidStateError naming the run."""
    run_id = h.run_until_complete(h.start_workflow("untyped").id).id
    with pytest.raises(InvalidStateError, match=run_id):
        h.pause_workflow(run_id)


def test_held_run_keeps_timers_that_fire_meanwhile(h: Harness) -> None:
    """A timer due while the run is held is kept: the run continues right after resume."""
    run_id = started(h, "napper")
    h.pause_workflow(run_id)
    h.advance("3h")
    run = h.get_run(run_id)
    assert run.status == "paused" and run.held and "nap" in run.timeline
    assert run.timeline["nap"].status == "waiting"
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output == "rested"


def test_event_does_not_unhold_a_run(h: Harness) -> None:
    """An event for a held run is kept in the mailbox but does not release the hold."""
    run_id = started(h, "waiter")
    h.pause_workflow(run_id)
    run = h.trigger_event(run_id, "go", {"n": 1})
    assert run.status == "paused" and run.held
    h.run_until_idle()
    h.advance("1h")
    assert h.get_run(run_id).status == "paused"
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output == {"n": 1}


def test_resume_without_hold_or_pause_step_is_invalid(h: Harness) -> None:
    """Resuming a run that is neither held nor at a Pause points to trigger_event / fast_forward_workflow."""
    run_id = started(h, "waiter")
    with pytest.raises(InvalidStateError) as info:
        h.resume_workflow(run_id)
    assert "trigger_event" in str(info.value) and "fast_forward_workflow" in str(info.value)
    assert run_id in str(info.value)


def test_resume_terminal_run_is_invalid(h: Harness) -> None:
    """Resuming a terminal run raises InvalidStateError."""
    run_id = h.run_until_complete(h.start_workflow("untyped").id).id
    with pytest.raises(InvalidStateError):
        h.resume_workflow(run_id)


def test_resume_releases_hold_and_pause_step_at_once(h: Harness) -> None:
    """On a run both held and at a Pause step one resume releases both."""
    run_id = started(h, "pauser")
    h.pause_workflow(run_id)
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output == "resumed"


def test_resume_held_run_that_still_waits_keeps_waiting(h: Harness) -> None:
    """Releasing the hold of a run that waits for an event leaves it waiting."""
    run_id = started(h, "waiter")
    h.pause_workflow(run_id)
    run = h.resume_workflow(run_id)
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "paused" and not run.held and run.waiting is not None


# ================================================================================ cancel


def test_cancel_waiting_run(h: Harness) -> None:
    """Cancelling a waiting run makes it ``cancelled``; its timer never fires."""
    run_id = started(h, "napper")
    run = h.cancel_workflow(run_id)
    assert run.status == "cancelled" and run.completed_at == T0
    h.advance("2h")
    assert h.get_run(run_id).status == "cancelled"


def test_cancel_pending_and_held_runs(h: Harness) -> None:
    """Pending and held runs can be cancelled too."""
    pending = h.start_workflow("napper").id
    held = h.start_workflow("napper").id
    h.pause_workflow(held)
    assert h.cancel_workflow(pending).status == "cancelled"
    assert h.cancel_workflow(held).status == "cancelled"
    h.run_until_idle()
    assert h.get_run(pending).timeline == {}


def test_cancel_terminal_run_is_invalid(h: Harness) -> None:
    """Cancelling twice raises InvalidStateError."""
    run_id = started(h, "napper")
    h.cancel_workflow(run_id)
    with pytest.raises(InvalidStateError, match="cancelled"):
        h.cancel_workflow(run_id)


# ================================================================================ fast forward


def test_fast_forward_walks_through_every_wait_kind(h: Harness) -> None:
    """fast_forward completes WaitFor (with data), Delay, Poll (with ``{}``) and Pause in turn."""
    run_id = started(h, "gate")
    h.fast_forward_workflow(run_id, {"ok": True})
    h.run_until_idle()
    assert h.get_run(run_id).waiting.kind == "delay"  # type: ignore[union-attr]
    h.fast_forward_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).waiting.kind == "poll"  # type: ignore[union-attr]
    h.fast_forward_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).waiting.kind == "pause"  # type: ignore[union-attr]
    h.fast_forward_workflow(run_id)
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.output == {"got": {"ok": True}, "polled": [False, {}]}
    assert run.completed_at == T0  # no simulated time passed


def test_fast_forward_wait_for_defaults_to_empty_dict(h: Harness) -> None:
    """fast_forward without data delivers ``{}`` to a WaitFor."""
    run_id = started(h, "waiter")
    h.fast_forward_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).output == {}


def test_fast_forward_poll_with_data(h: Harness) -> None:
    """fast_forward with data resolves a Poll with ``PollResult(False, data)``."""
    seen: list[Any] = []

    @workflow("ff-poll")
    def wf(ctx: Any) -> Flow:
        seen.append((yield Poll("p", lambda: None, interval="1h")))

    h.register(wf)
    run_id = started(h, wf)
    h.fast_forward_workflow(run_id, [1, 2])
    h.run_until_idle()
    assert seen == [PollResult(False, [1, 2])]


def test_fast_forward_releases_held_pending_run(h: Harness) -> None:
    """fast_forward on a held run that was still pending releases it."""
    run_id = h.start_workflow("untyped", 5).id
    h.pause_workflow(run_id)
    run = h.fast_forward_workflow(run_id)
    assert not run.held
    h.run_until_idle()
    assert h.get_run(run_id).output == 5


def test_fast_forward_noop_when_not_waiting(h: Harness) -> None:
    """fast_forward on a run that is neither waiting nor held returns it unchanged."""
    run = h.start_workflow("untyped", 1)
    same = h.fast_forward_workflow(run.id)
    assert same == run
    done_id = h.run_until_complete(run.id).id
    assert h.fast_forward_workflow(done_id).status == "completed"


def test_fast_forward_wait_until(h: Harness) -> None:
    """fast_forward fires a WaitUntil now."""

    @workflow("ff-until")
    def wf(ctx: Any) -> Flow:
        yield WaitUntil("u", "2031-01-01")

    h.register(wf)
    run_id = started(h, wf)
    h.fast_forward_workflow(run_id)
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "completed" and run.completed_at == T0


# ================================================================================ events


def test_trigger_event_on_terminal_run_stores_nothing(h: Harness) -> None:
    """trigger_event on a terminal run raises InvalidStateError and stores no event."""
    run_id = h.run_until_complete(h.start_workflow("untyped").id).id
    with pytest.raises(InvalidStateError):
        h.trigger_event(run_id, "go", {"late": True})
    assert h.store.mailbox(run_id) == []  # type: ignore[attr-defined]


def test_trigger_event_unknown_run(h: Harness) -> None:
    """trigger_event on an unknown run raises RunNotFoundError."""
    with pytest.raises(RunNotFoundError):
        h.trigger_event("no-such-run", "go")


def test_trigger_event_returns_the_run(h: Harness) -> None:
    """trigger_event returns the run (woken: ``pending``) and keeps the event in the mailbox."""
    run_id = started(h, "waiter")
    run = h.trigger_event(run_id, "go", 1)
    assert run.id == run_id and run.status == "pending"
    assert [e.data for e in h.store.mailbox(run_id)] == [1]  # type: ignore[attr-defined]


def test_unrelated_event_does_not_wake_the_run(h: Harness) -> None:
    """An event the run does not wait for is buffered without waking it."""
    run_id = started(h, "waiter")
    assert h.trigger_event(run_id, "other").status == "paused"


# ================================================================================ resource_id


def test_resource_id_scopes_every_method(h: Harness) -> None:
    """A method given another resource_id reports RunNotFoundError, exactly as for a missing run."""
    run_id = started(h, "waiter", resource_id="tenant-a")
    calls = [
        lambda r: h.get_run(run_id, resource_id=r),
        lambda r: h.check_progress(run_id, resource_id=r),
        lambda r: h.trigger_event(run_id, "go", resource_id=r),
        lambda r: h.pause_workflow(run_id, resource_id=r),
        lambda r: h.resume_workflow(run_id, resource_id=r),
        lambda r: h.fast_forward_workflow(run_id, resource_id=r),
        lambda r: h.cancel_workflow(run_id, resource_id=r),
        lambda r: h.wait_for_run(run_id, resource_id=r, timeout="1s"),
    ]
    for call in calls:
        with pytest.raises(RunNotFoundError) as other:
            call("tenant-b")
        assert "tenant-a" not in str(other.value)
    assert h.store.mailbox(run_id) == []  # type: ignore[attr-defined]
    assert h.get_run(run_id, resource_id="tenant-a").status == "paused"
    assert h.get_run(run_id).resource_id == "tenant-a"


def test_resource_id_cannot_probe_runs_without_one(h: Harness) -> None:
    """A run without resource_id is not found when a resource_id is given; same message as a missing run."""
    run_id = started(h, "waiter")
    with pytest.raises(RunNotFoundError) as found:
        h.get_run(run_id, resource_id="tenant-a")
    with pytest.raises(RunNotFoundError) as missing:
        h.get_run("0" * 36, resource_id="tenant-a")
    assert str(found.value).replace(run_id, "ID") == str(missing.value).replace("0" * 36, "ID")


def test_resource_id_filters_get_runs(h: Harness) -> None:
    """``get_runs(resource_id=...)`` lists only that resource's runs."""
    a = h.start_workflow("untyped", resource_id="a").id
    h.start_workflow("untyped", resource_id="b")
    h.start_workflow("untyped")
    assert [r.id for r in h.get_runs(resource_id="a").items] == [a]


# ================================================================================ idempotency


def test_idempotency_key_returns_existing_run(h: Harness) -> None:
    """A second start with the same key returns the same run and enqueues nothing."""
    first = h.start_workflow("untyped", 1, idempotency_key="k-1")
    h.run_until_idle()
    second = h.start_workflow("untyped", 2, idempotency_key="k-1")
    assert second.id == first.id and second.status == "completed" and second.input == 1
    assert second.idempotency_key == "k-1"
    assert len(h.get_runs().items) == 1


def test_idempotency_key_with_resource(h: Harness) -> None:
    """Same key, same workflow and resource returns the run."""
    first = h.start_workflow("untyped", resource_id="r", idempotency_key="k")
    assert h.start_workflow("untyped", resource_id="r", idempotency_key="k").id == first.id


def test_idempotency_key_of_another_workflow_conflicts(h: Harness) -> None:
    """The same key for another workflow raises IdempotencyConflictError."""
    h.start_workflow("untyped", idempotency_key="k")
    with pytest.raises(IdempotencyConflictError):
        h.start_workflow("napper", idempotency_key="k")


def test_idempotency_key_of_another_resource_conflicts(h: Harness) -> None:
    """The same key for another resource raises IdempotencyConflictError, never leaking the run."""
    h.start_workflow("untyped", resource_id="tenant-a", idempotency_key="k")
    with pytest.raises(IdempotencyConflictError) as info:
        h.start_workflow("untyped", resource_id="tenant-b", idempotency_key="k")
    assert "tenant-a" not in str(info.value)
    with pytest.raises(IdempotencyConflictError):
        h.start_workflow("untyped", idempotency_key="k")


# ================================================================================ argument limits


@pytest.mark.parametrize("argument", ["resource_id", "idempotency_key"])
def test_over_long_start_arguments(h: Harness, argument: str) -> None:
    """start_workflow rejects over-long resource_id / idempotency_key, naming the argument."""
    with pytest.raises(InvalidArgumentError, match=argument):
        h.start_workflow("untyped", **{argument: LONG})
    assert no_runs(h)


def test_256_character_arguments_are_fine(h: Harness) -> None:
    """Strings of exactly 256 characters are accepted."""
    run = h.start_workflow("untyped", resource_id="r" * 256, idempotency_key="k" * 256)
    assert run.resource_id == "r" * 256


def test_over_long_resource_id_in_every_method(h: Harness) -> None:
    """Every method taking resource_id rejects an over-long one with InvalidArgumentError naming it."""
    run_id = started(h, "waiter")
    calls = [
        lambda: h.get_run(run_id, resource_id=LONG),
        lambda: h.check_progress(run_id, resource_id=LONG),
        lambda: h.trigger_event(run_id, "go", resource_id=LONG),
        lambda: h.pause_workflow(run_id, resource_id=LONG),
        lambda: h.resume_workflow(run_id, resource_id=LONG),
        lambda: h.cancel_workflow(run_id, resource_id=LONG),
        lambda: h.fast_forward_workflow(run_id, resource_id=LONG),
        lambda: h.get_runs(resource_id=LONG),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="resource_id"):
            call()
    assert h.get_run(run_id).status == "paused"


def test_over_long_workflow_id(h: Harness) -> None:
    """A workflow id over 256 characters is an InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError, match="workflow"):
        h.start_workflow(LONG)
    with pytest.raises(InvalidArgumentError, match="workflow_id"):
        h.get_runs(workflow_id=LONG)


# ================================================================================ get_runs


def _ids(page: pgflow.RunPage) -> list[str]:
    return [r.id for r in page.items]


def test_get_runs_pages_forward_and_back(h: Harness, clock: SimClock) -> None:
    """35 runs, limit 10: pages of 10/10/10/5 with cursors; walking back reproduces them."""
    for i in range(35):
        h.start_workflow("untyped", i)
        if i % 3 == 0:
            clock.advance("1s")  # some runs share a creation time: ties are broken by id
    pages = [h.get_runs(limit=10)]
    while pages[-1].has_more:
        pages.append(h.get_runs(limit=10, starting_after=pages[-1].next_cursor))
    assert [len(p.items) for p in pages] == [10, 10, 10, 5]
    assert (pages[0].has_prev, pages[0].prev_cursor) == (False, None)
    assert (pages[-1].has_more, pages[-1].next_cursor) == (False, None)
    assert all(p.has_prev and p.prev_cursor == p.items[0].id for p in pages[1:])
    assert all(p.has_more and p.next_cursor == p.items[-1].id for p in pages[:-1])
    everything = [rid for p in pages for rid in _ids(p)]
    assert len(set(everything)) == 35
    keys = [(r.created_at, r.id) for p in pages for r in p.items]
    assert keys == sorted(keys, reverse=True)
    back = [pages[-1]]
    while back[-1].has_prev:
        back.append(h.get_runs(limit=10, ending_before=back[-1].prev_cursor))
    assert [_ids(p) for p in reversed(back)] == [_ids(p) for p in pages]
    assert not back[-1].has_prev and back[-1].prev_cursor is None


def test_get_runs_unknown_cursor(h: Harness) -> None:
    """An unknown cursor raises InvalidArgumentError."""
    h.start_workflow("untyped")
    with pytest.raises(InvalidArgumentError, match="cursor"):
        h.get_runs(starting_after="not-a-run")
    with pytest.raises(InvalidArgumentError, match="cursor"):
        h.get_runs(ending_before="not-a-run")


def test_get_runs_limit_is_clamped(h: Harness) -> None:
    """``limit`` is clamped to 1–100."""
    for _ in range(105):
        h.start_workflow("untyped")
    assert len(h.get_runs(limit=0).items) == 1
    assert len(h.get_runs(limit=-5).items) == 1
    assert len(h.get_runs(limit=1000).items) == 100
    assert len(h.get_runs().items) == 20


def test_get_runs_filters_combine(h: Harness) -> None:
    """``workflow_id`` and ``statuses`` filters combine with AND."""
    done = h.start_workflow("untyped").id
    h.run_until_idle()
    waiting = started(h, "waiter")
    h.start_workflow("napper")
    assert _ids(h.get_runs(statuses=["completed"])) == [done]
    assert _ids(h.get_runs(workflow_id="waiter", statuses=["paused", "pending"])) == [waiting]
    assert _ids(h.get_runs(workflow_id="waiter", statuses=["completed"])) == []
    with pytest.raises(InvalidArgumentError):
        h.get_runs(statuses=["sleeping"])


# ============================================================ client calls while a step is executing


def test_event_delivered_while_running_is_not_lost(clock: SimClock) -> None:
    """An event delivered while a worker executes the run is seen before the run suspends."""
    box: dict[str, str] = {}

    def send_while_running() -> str:
        h.trigger_event(box["run"], "go", "during")
        return "sent"

    @workflow("event-while-running")
    def wf(ctx: Any) -> Flow:
        yield Run("send", send_while_running)
        return (yield WaitFor("w", event="go"))

    h = Harness(workflows=[wf], clock=clock)
    box["run"] = h.start_workflow(wf).id
    h.run_until_idle()
    assert h.get_run(box["run"]).output == "during"


def test_pause_while_a_step_executes_lets_it_finish(clock: SimClock) -> None:
    """Pausing during a step: the step finishes and is recorded, nothing further runs until resume."""
    box: dict[str, str] = {}
    ran: list[str] = []

    def pause_me() -> str:
        ran.append("a")
        h.pause_workflow(box["run"])
        return "a"

    @workflow("pause-while-running")
    def wf(ctx: Any) -> Flow:
        yield Run("a", pause_me)
        yield Run("b", lambda: ran.append("b"))

    h = Harness(workflows=[wf], clock=clock)
    box["run"] = h.start_workflow(wf).id
    h.run_until_idle()
    run = h.get_run(box["run"])
    assert (run.status, run.held, list(run.timeline), ran) == ("paused", True, ["a"], ["a"])
    assert run.timeline["a"].status == "completed"
    h.resume_workflow(box["run"])
    h.run_until_idle()
    assert h.get_run(box["run"]).status == "completed" and ran == ["a", "b"]


def test_cancel_while_a_step_executes_stops_the_run(clock: SimClock) -> None:
    """Cancelling during a step: the run ends cancelled and no later step runs."""
    box: dict[str, str] = {}
    ran: list[str] = []

    def cancel_me() -> str:
        ran.append("a")
        h.cancel_workflow(box["run"])
        return "a"

    @workflow("cancel-while-running")
    def wf(ctx: Any) -> Flow:
        yield Run("a", cancel_me)
        yield Run("b", lambda: ran.append("b"))

    h = Harness(workflows=[wf], clock=clock)
    box["run"] = h.start_workflow(wf).id
    h.run_until_idle()
    h.advance("1h")
    run = h.get_run(box["run"])
    assert run.status == "cancelled" and ran == ["a"] and "b" not in run.timeline


def test_concurrent_duplicate_cancel_one_raises(h: Harness) -> None:
    """Of two cancels, the first wins and the second raises InvalidStateError."""
    run_id = started(h, "waiter")
    h.cancel_workflow(run_id)
    with pytest.raises(InvalidStateError):
        h.cancel_workflow(run_id)
