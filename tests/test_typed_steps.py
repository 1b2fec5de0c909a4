"""Typed steps at run time (SPEC §17): ``x = yield from cmd`` is ``x = yield cmd``; ``output_of``.

The static side (what mypy and pyright infer and refuse) is in ``tests/typing/`` and
``tests/test_typing.py``; here the same workflow written with ``yield`` and with ``yield from``
must give the same values, the same exceptions at the same place, the same records and the same
replays, on the Harness (the engine's processor) and on the ``Replayer`` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import pendulum
import pytest

import pgflow
from pgflow import (
    All,
    Child,
    Delay,
    Flow,
    Pause,
    Poll,
    PollResult,
    Run,
    StepFailedError,
    Transaction,
    WaitFor,
    WaitUntil,
    output_of,
    workflow,
)
from pgflow.errors import InvalidArgumentError, InvalidStateError, SerializationError
from pgflow.replay import Complete, Execute, Replayer, ReplayInput, Suspend
from pgflow.testing import Harness, SimClock

T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


@attrs.frozen
class Account:
    id: int
    email: str


@attrs.frozen
class Confirmation:
    code: str


@attrs.frozen
class Report:
    account: Account
    values: list[Any]


def create_account(email: str) -> Account:
    return Account(7, email)


async def score(account_id: int) -> float:
    await asyncio.sleep(0)
    return account_id / 2


def refuse(reason: str) -> int:
    raise ValueError(reason)


def ready() -> dict[str, int] | None:
    return {"ready": 1}


def noop() -> None:
    pass


# ------------------------------------------------------------------------ commands are iterable


COMMANDS: list[Callable[[], pgflow.commands.Yieldable[Any]]] = [
    lambda: Run("r", create_account, "a@b.c"),
    lambda: WaitFor("w", "evt", timeout="1h", schema=Confirmation),
    lambda: WaitUntil("u", "2030-01-01T00:00:00Z"),
    lambda: Delay("d", "1s"),
    lambda: Pause("p"),
    lambda: Poll("poll", ready, interval="1m"),
    lambda: Transaction("t", lambda conn, n: n, 5),
    lambda: Child("c", "other", {"x": 1}),
    lambda: All(Run("a", noop), Delay("b", "1s")),
]


@pytest.mark.parametrize("make", COMMANDS, ids=lambda make: type(make()).__name__)
def test_iterating_a_command_yields_it_once_and_returns_what_is_sent(make: Callable[[], Any]) -> None:
    """``iter(cmd)`` yields the command itself (the interpreter sees the command, not a generator),
    once, and returns the value sent back."""
    cmd = make()
    steps = iter(cmd)
    assert next(steps) is cmd
    with pytest.raises(StopIteration) as stopped:
        steps.send({"sent": 1})
    assert stopped.value.value == {"sent": 1}


@pytest.mark.parametrize("make", COMMANDS, ids=lambda make: type(make()).__name__)
def test_an_exception_thrown_into_the_iteration_comes_out_unchanged(make: Callable[[], Any]) -> None:
    """What the interpreter throws at the ``yield`` (``StepFailedError``) passes through the
    ``yield from`` unchanged."""
    steps = iter(make())
    next(steps)
    error = StepFailedError("r", "ValueError", "nope", 1)
    with pytest.raises(StepFailedError) as raised:
        steps.throw(error)
    assert raised.value is error


def test_commands_are_still_values() -> None:
    """Being iterable changes nothing else: equality, hashing-free frozen values, argument checks."""
    assert Run("r", create_account, "a") == Run("r", create_account, "a")
    assert list(Run("r", noop)) == [Run("r", noop)]
    with pytest.raises(InvalidArgumentError, match="step_id"):
        Run("", noop)
    with pytest.raises(InvalidArgumentError, match="All"):
        All()


# ----------------------------------------------------------- yield and yield from, side by side


@workflow("child-flow")
def child_flow(ctx: pgflow.Context[dict[str, int]]) -> Flow[dict[str, int]]:
    yield Delay("child-delay", "1s")
    return {"doubled": ctx.input["n"] * 2}


CALLS: dict[str, int] = {}


def counted(name: str, value: Any) -> Any:
    CALLS[name] = CALLS.get(name, 0) + 1
    return value


@workflow("plain-yield")
def plain_yield(ctx: pgflow.Context[None]) -> Flow[Report]:
    account = yield Run("account", create_account, "a@b.c")
    points = yield Run("score", score, account.id)
    counted_value = yield Run("counted", counted, "plain", 3)
    confirmation = yield WaitFor("confirm", event="confirmed", schema=Confirmation, timeout="1h")
    missed = yield WaitFor("missed", event="never", timeout="10s")
    polled = yield Poll("ready", ready, interval="1m")
    both = yield All(Run("a", create_account, "x@y.z"), Delay("b", "1s"))
    child = yield Child("child", child_flow, {"n": 21})
    try:
        yield Run("refuse", refuse, "no")
        caught = None
    except StepFailedError as exc:
        caught = (exc.step_id, exc.error_type, exc.message, exc.attempts)
    when = yield WaitUntil("until", T0.add(days=1))
    slept = yield Delay("sleep", "1m")
    return Report(
        account, [points, counted_value, confirmation, missed, polled, both, child, caught, when, slept]
    )


@workflow("yield-from")
def yield_from(ctx: pgflow.Context[None]) -> Flow[Report]:
    account = yield from Run("account", create_account, "a@b.c")
    points = yield from Run("score", score, account.id)
    counted_value = yield from Run("counted", counted, "from", 3)
    confirmation = yield from WaitFor("confirm", event="confirmed", schema=Confirmation, timeout="1h")
    missed = yield from WaitFor("missed", event="never", timeout="10s")
    polled = yield from Poll("ready", ready, interval="1m")
    both = yield from All(Run("a", create_account, "x@y.z"), Delay("b", "1s"))
    child = yield from Child("child", child_flow, {"n": 21})
    try:
        yield from Run("refuse", refuse, "no")
        caught = None
    except StepFailedError as exc:
        caught = (exc.step_id, exc.error_type, exc.message, exc.attempts)
    when = yield from WaitUntil("until", T0.add(days=1))
    slept = yield from Delay("sleep", "1m")
    return Report(
        account, [points, counted_value, confirmation, missed, polled, both, child, caught, when, slept]
    )


def _drive(wf: pgflow.Workflow[None, Report], crash: str | None = None) -> pgflow.WorkflowRun:
    h = Harness(workflows=[wf, child_flow], clock=SimClock(T0), lease="5s")
    if crash is not None:
        h.crash_after(crash)
    run = h.start_workflow(wf)
    h.run_until_idle()
    h.advance("5s")  # a crashed worker's lease expires: the run is replayed from its history
    h.trigger_event(run.id, "confirmed", {"code": "c-1"})
    h.advance("1m")
    return h.run_until_complete(run.id)


def _shape(run: pgflow.WorkflowRun) -> list[tuple[Any, ...]]:
    return [
        (s.step_id, s.kind, s.status, s.output, s.timed_out, s.attempts, s.seq, s.error and s.error.type)
        for s in run.timeline.values()
    ]


@pytest.mark.parametrize("crash", [None, "account", "confirm", "child", "refuse"])
def test_yield_from_runs_exactly_as_yield(crash: str | None) -> None:
    """The same steps, values (round-tripped through return annotations, schemas), a failure thrown
    at the same place, the same records; a crash and replay in the middle changes nothing and runs
    no recorded step again."""
    CALLS.clear()
    plain = _drive(plain_yield, crash)
    typed = _drive(yield_from, crash)
    assert plain.status == typed.status == "completed"
    assert _shape(plain) == _shape(typed)
    assert plain.output == typed.output
    assert CALLS == {"plain": 1, "from": 1}
    report = output_of(typed, yield_from)
    assert report.account == Account(7, "a@b.c")
    points, counted_value, confirmation, missed, polled, both, child, caught, when, slept = report.values
    assert (points, counted_value, missed, when, slept) == (3.5, 3, None, None, None)
    assert confirmation == {"code": "c-1"}  # the output is JSON: values inside a list[Any] stay JSON
    assert polled == {"timed_out": False, "data": {"ready": 1}}
    assert both == [{"id": 7, "email": "x@y.z"}, None] and child == {"doubled": 42}
    assert caught == ["refuse", "ValueError", "no", 1]


def test_yield_from_gives_the_workflow_the_same_objects_as_yield() -> None:
    """Inside the workflow, each value has the same type and value with either form."""
    seen: dict[str, list[Any]] = {}

    def make(name: str, typed: bool) -> pgflow.Workflow[None, None]:
        def body(ctx: pgflow.Context[None]) -> Flow[None]:
            values = seen.setdefault(name, [])
            steps: list[Any] = [
                Run("account", create_account, "a@b.c"),
                WaitFor("confirm", event="confirmed", schema=Confirmation),
                Poll("ready", ready),
                All(Run("a", score, 4), Run("b", create_account, "b@c.d")),
            ]
            for step in steps:
                values.append((yield from step) if typed else (yield step))

        body.__name__ = name
        return workflow(name)(body)

    for name, typed in (("with-yield", False), ("with-yield-from", True)):
        wf = make(name, typed)
        h = Harness(workflows=[wf], clock=SimClock(T0))
        run = h.start_workflow(wf)
        h.run_until_idle()
        h.trigger_event(run.id, "confirmed", {"code": "x"})
        assert h.run_until_complete(run.id).status == "completed"
    # each list holds the values of every execution (replays give the same values again)
    assert seen["with-yield"] == seen["with-yield-from"]
    assert seen["with-yield"][-4:] == [
        Account(7, "a@b.c"), Confirmation("x"), PollResult(False, {"ready": 1}), [2.0, Account(7, "b@c.d")],
    ]  # fmt: skip


def test_replayer_gets_the_command_itself_from_a_yield_from() -> None:
    """The interpreter receives the command (not a generator) and sends the recorded value back
    through the ``yield from``; a replay from the records gives the same decision."""

    @workflow("replayed")
    def wf(ctx: pgflow.Context[None]) -> Flow[list[Any]]:
        first = yield from Run("first", create_account, "a@b.c")
        event = yield from WaitFor("event", event="go", timeout="1h")
        return [first.email, event]

    run = ReplayInput("run-1", wf.id, None, 0, None)
    decision = Replayer(wf, run, {}).decide(T0)
    assert isinstance(decision.action, Execute)
    (cmd, started), *_ = decision.action.steps
    assert cmd == Run("first", create_account, "a@b.c")
    done = attrs.evolve(started, status="completed", output={"id": 7, "email": "a@b.c"}, completed_at=T0)
    waiting = Replayer(wf, run, {"first": done}).decide(T0)
    assert isinstance(waiting.action, Suspend) and waiting.action.wake_at == T0.add(hours=1)
    history = {"first": done, **{r.step_id: r for r in waiting.writes}}
    timed_out = Replayer(wf, run, history).decide(T0.add(hours=1))
    assert isinstance(timed_out.action, Complete) and timed_out.action.output == ["a@b.c", None]


def test_a_sub_flow_is_used_with_yield_from() -> None:
    """A helper generator typed ``Flow[T]`` is spliced in with ``yield from``, its steps recorded
    in the run like the workflow's own."""

    def charge_twice(amount: int) -> Flow[list[int]]:
        first = yield from Run("charge-1", counted, "charge", amount)
        second = yield from Run("charge-2", counted, "charge", amount + 1)
        return [first, second]

    @workflow("with-helper")
    def wf(ctx: pgflow.Context[None]) -> Flow[int]:
        charges = yield from charge_twice(10)
        return sum(charges)

    CALLS.clear()
    h = Harness(workflows=[wf], clock=SimClock(T0))
    run = h.run_until_complete(h.start_workflow(wf).id)
    assert output_of(run, wf) == 21 and list(run.timeline) == ["charge-1", "charge-2"]
    assert CALLS == {"charge": 2}


# -------------------------------------------------------------------------------------- output_of


@workflow("typed-output")
def typed_output(ctx: pgflow.Context[None]) -> Flow[Account]:
    return (yield from Run("account", create_account, "a@b.c"))


@workflow("untyped-output")
def untyped_output(ctx: Any) -> Any:
    return (yield Run("account", create_account, "a@b.c"))


@workflow("waits")
def waits(ctx: pgflow.Context[None]) -> Flow[int]:
    yield from Pause("hold")
    return 1


@workflow("fails")
def fails(ctx: pgflow.Context[None]) -> Flow[int]:
    return (yield from Run("refuse", refuse, "no way"))


def _completed(wf: pgflow.Workflow[Any, Any]) -> pgflow.WorkflowRun:
    h = Harness(workflows=[wf], clock=SimClock(T0))
    return h.run_until_complete(h.start_workflow(wf).id)


def test_output_of_structures_the_output_as_the_return_annotation() -> None:
    """``Flow[Account]``: the stored JSON comes back as an ``Account``; with no usable annotation
    the stored value as it is."""
    run = _completed(typed_output)
    assert run.output == {"id": 7, "email": "a@b.c"}
    assert output_of(run, typed_output) == Account(7, "a@b.c")
    plain = _completed(untyped_output)
    assert output_of(plain, untyped_output) == {"id": 7, "email": "a@b.c"}
    assert pgflow.definition.output_type(typed_output) is Account
    assert pgflow.definition.output_type(untyped_output) is None


def test_output_of_a_ref_uses_its_output_type() -> None:
    """``ref(..., output=Account)``: ``output_of`` structures with it; ``implement`` keeps it."""
    account_ref = pgflow.ref("typed-output", output=Account)
    run = _completed(typed_output)
    assert output_of(run, account_ref) == Account(7, "a@b.c")
    assert output_of(run, pgflow.ref("typed-output")) == {"id": 7, "email": "a@b.c"}

    implemented_ref = pgflow.ref("implemented", output=Account)

    @implemented_ref.implement()
    def implemented(ctx: Any) -> Any:
        return (yield Run("account", create_account, "a@b.c"))

    assert implemented.output is Account
    assert output_of(_completed(implemented), implemented) == Account(7, "a@b.c")


def test_output_of_refuses_a_run_without_output_or_of_another_workflow() -> None:
    """A run that has not completed has no output: ``InvalidStateError`` (saying why); a run of
    another workflow, or something else than a run or a workflow: ``InvalidArgumentError``."""
    h = Harness(workflows=[waits, fails], clock=SimClock(T0))
    waiting = h.start_workflow(waits)
    h.run_until_idle()
    with pytest.raises(InvalidStateError, match="paused, not completed"):
        output_of(h.get_run(waiting.id), waits)
    failed = h.run_until_complete(h.start_workflow(fails).id)
    with pytest.raises(InvalidStateError, match=r"failed, not completed.*ValueError: no way"):
        output_of(failed, fails)
    with pytest.raises(InvalidArgumentError, match="run of workflow 'fails', not of 'waits'"):
        output_of(failed, waits)
    with pytest.raises(InvalidArgumentError, match="run must be a WorkflowRun"):
        output_of("run-id", waits)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="workflow must be a Workflow"):
        output_of(failed, "fails")  # type: ignore[arg-type]


def test_output_of_an_output_that_does_not_fit_is_a_serialization_error() -> None:
    """The workflow returned something else than its annotation says: ``SerializationError``."""

    @workflow("liar")
    def liar(ctx: Any) -> Flow[Account]:
        yield from Delay("d", "1s")
        return "not an account"  # type: ignore[return-value]

    with pytest.raises(SerializationError, match="Account"):
        output_of(_completed(liar), liar)


# ------------------------------------------------------------------ Child gives the child's type


@workflow("account-child")
def account_child(ctx: pgflow.Context[str]) -> Flow[Account]:
    return (yield from Run("create", create_account, ctx.input))


account_ref = pgflow.ref("account-child", input=str, output=Account)


@workflow("account-parent")
def account_parent(ctx: pgflow.Context[None]) -> Flow[list[Any]]:
    typed = yield from Child("typed", account_child, "a@b.c")
    by_ref = yield from Child("by-ref", account_ref, "b@c.d")
    by_id = yield from Child("by-id", "account-child", "c@d.e")
    plain = yield Child("plain-yield", account_child, "d@e.f")
    return [typed, by_ref, by_id, plain, [type(v).__name__ for v in (typed, by_ref, by_id, plain)]]


def test_a_child_gives_its_output_structured_as_the_child_workflow_returns_it() -> None:
    """``Child`` of a ``Workflow`` (its ``Flow[...]`` annotation) or a ref with ``output=`` gives
    the output structured as that type, as ``output_of`` does; a child by id gives the stored JSON."""
    h = Harness(workflows=[account_parent, account_child], clock=SimClock(T0))
    run = h.run_until_complete(h.start_workflow(account_parent).id)
    assert run.status == "completed"
    assert run.output[-1] == ["Account", "Account", "dict", "Account"]
    assert run.output[2] == {"id": 7, "email": "c@d.e"}


def test_a_child_output_that_does_not_fit_its_type_fails_the_parent() -> None:
    """A child that returns something else than its annotation says fails the parent with a
    ``SerializationError`` (not retried), as a step result that does not fit would."""

    @workflow("lying-child")
    def lying_child(ctx: Any) -> Flow[Account]:
        yield from Delay("d", "1s")
        return "not an account"  # type: ignore[return-value]

    @workflow("trusting-parent", retries=2)
    def trusting_parent(ctx: pgflow.Context[None]) -> Flow[str]:
        account = yield from Child("child", lying_child)
        return account.email

    h = Harness(workflows=[trusting_parent, lying_child], clock=SimClock(T0))
    run = h.run_until_complete(h.start_workflow(trusting_parent).id)
    assert run.status == "failed" and run.retry_count == 0
    assert run.error is not None and run.error.type == "SerializationError"
