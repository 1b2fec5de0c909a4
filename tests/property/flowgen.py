"""Generated workflows for the replay-core property tests.

A workflow is data: a :class:`Scenario` holds a list of step specs, and one generic generator function
(:data:`generic`) interprets them. Step functions are attrs callables (equal by value), so two
replays of the same history yield equal commands and their decisions can be compared with ``==``.

Everything a property needs to observe is recorded here, per scenario *token*:

- ``EFFECTS[token][step_id]``: how many times a step function actually ran (side effects);
- ``VALUES[token][(attempt, key)]``: every value a ``yield`` evaluated to, in every generator that
  ran (live, replays, fresh checking replayers), so first execution and replay can be compared;
- ``CHECK_FAILURES[token]``: the type and consistency checks that failed *inside* the workflow. The
  engine turns any exception raised by workflow code into a run failure (and a crash-free run and
  its crashed twin would fail alike), so a failed check is recorded here as well, and the driver
  fails the test when this list is not empty.

Step functions never fail by *call count* (a crash may legitimately re-run a step), only by their
spec and the run attempt, so a crashed-and-recovered run must end exactly like a crash-free one.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from unittest import mock

import attrs
import pendulum
from hypothesis import strategies as st

import pgflow
import pgflow.protocol
from pgflow import (
    TERMINAL,
    All,
    Delay,
    InvalidStateError,
    Pause,
    Poll,
    PollResult,
    Retry,
    Run,
    StepFailedError,
    WaitFor,
    WaitUntil,
    workflow,
)
from pgflow.replay import Replayer, ReplayInput
from pgflow.testing import AsyncHarness, Harness, SimClock

T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
EVENTS = ("e0", "e1")
LEASE = "1ms"  # crash recovery costs (almost) no simulated time, so timeouts race identically
MAX_ROUNDS = 400

_lock = threading.Lock()
_speculative = threading.local()  # set while a checking Replayer decides what nobody will record
_speculative.on = False
_tokens = itertools.count()
SPECS: dict[str, Scenario] = {}
EFFECTS: dict[str, Counter[str]] = defaultdict(Counter)
VALUES: dict[str, dict[tuple[int, str], list[Any]]] = defaultdict(lambda: defaultdict(list))
CHECK_FAILURES: dict[str, list[str]] = defaultdict(list)


# ------------------------------------------------------------------------------------ step specs


@attrs.frozen
class RunSpec:
    sid: str
    # ok | fail (ValueError) | fatal (KeyError, non-retryable) | flaky (fails on early run attempts)
    mode: str = "ok"
    until_attempt: int = 1
    retry: int | None = None  # Retry(max_attempts=...) or no step retry
    catch: bool = False


@attrs.frozen
class WaitSpec:
    sid: str
    event: str
    timeout: int | None = None
    early: bool = False  # the event is sent before the run starts
    actions: tuple[str, ...] = ()
    catch: bool = False
    picky: bool = False  # a schema that rejects events with an odd serial number (they stay in the mailbox)


@attrs.frozen
class DelaySpec:
    sid: str
    seconds: int
    actions: tuple[str, ...] = ()
    catch: bool = False


@attrs.frozen
class UntilSpec:
    sid: str
    future: bool
    actions: tuple[str, ...] = ()
    catch: bool = False


@attrs.frozen
class PollSpec:
    sid: str
    ready_after: int
    interval: int
    ticks: int | None  # timeout = interval * ticks + interval / 2, or no timeout
    raise_first: bool = False
    actions: tuple[str, ...] = ()
    catch: bool = False


@attrs.frozen
class PauseSpec:
    sid: str
    actions: tuple[str, ...] = ()
    catch: bool = False


@attrs.frozen
class AllSpec:
    parts: tuple[RunSpec | DelaySpec | WaitSpec, ...]
    catch: bool = False

    @property
    def sid(self) -> str:
        return "+".join(p.sid for p in self.parts)


StepSpec = RunSpec | WaitSpec | DelaySpec | UntilSpec | PollSpec | PauseSpec | AllSpec
ACTIONS = {
    "wait_for": ("send", "twice", "ff", "timeout", "hold", "hold_late"),
    "delay": ("advance", "ff", "hold"),
    "wait_until": ("advance", "ff", "hold"),
    "poll": ("advance", "ff", "hold"),
    "pause": ("resume", "ff", "hold"),
}
PROGRESS = {
    "wait_for": "send",
    "delay": "advance",
    "wait_until": "advance",
    "poll": "advance",
    "pause": "resume",
}


@attrs.frozen
class Scenario:
    steps: tuple[StepSpec, ...]
    retries: int = 0
    crash_before: frozenset[str] = frozenset()
    crash_after: frozenset[str] = frozenset()
    visit_events: tuple[tuple[str, str], ...] = ()  # (step id, event): send it on the first visit there
    timeout: str | None = None  # the run's workflow timeout

    def flat(self) -> Iterator[StepSpec]:
        for step in self.steps:
            if isinstance(step, AllSpec):
                yield from step.parts
            else:
                yield step

    def by_id(self) -> dict[str, StepSpec]:
        return {s.sid: s for s in self.flat()}

    def without_crashes(self) -> Scenario:
        return attrs.evolve(self, crash_before=frozenset(), crash_after=frozenset())


# ---------------------------------------------------------------------------------- step functions


@attrs.frozen
class Result:
    """What a Run step returns; structured back through ``StepFn.__call__``'s annotation."""

    sid: str
    size: int


@attrs.frozen
class StepFn:
    token: str
    sid: str
    mode: str
    until_attempt: int
    attempt: int

    def __call__(self) -> Result:
        with _lock:
            EFFECTS[self.token][self.sid] += 1
        if self.mode == "fail":
            raise ValueError(f"{self.sid} failed")
        if self.mode == "fatal":
            raise KeyError(self.sid)
        if self.mode == "flaky" and self.attempt < self.until_attempt:
            raise ValueError(f"{self.sid} flaked on attempt {self.attempt}")
        return Result(self.sid, len(self.sid))


@attrs.frozen
class PollFn:
    token: str
    sid: str
    ready_after: int
    raise_first: bool

    def __call__(self) -> Any:
        with _lock:
            EFFECTS[self.token][self.sid] += 1
            calls = EFFECTS[self.token][self.sid]
        if self.raise_first and calls == 1:
            raise ConnectionError(f"{self.sid} is down")
        return {"ready": self.sid} if calls >= self.ready_after else None


def even_only(data: Any) -> Any:
    """A WaitFor schema: events with an odd serial number are rejected."""
    if data.get("n", 0) % 2:
        raise ValueError(f"odd event #{data['n']}")
    return data


def command(step: StepSpec, token: str, attempt: int) -> Any:
    if isinstance(step, RunSpec):
        retry = None
        if step.retry is not None:
            retry = Retry(max_attempts=step.retry, initial="2s", jitter=0, non_retryable=(KeyError,))
        return Run(step.sid, StepFn(token, step.sid, step.mode, step.until_attempt, attempt), retry=retry)
    if isinstance(step, WaitSpec):
        return WaitFor(step.sid, step.event, timeout=f"{step.timeout}s" if step.timeout else None,
                       schema=even_only if step.picky else None)  # fmt: skip
    if isinstance(step, DelaySpec):
        return Delay(step.sid, f"{step.seconds}s")
    if isinstance(step, UntilSpec):
        return WaitUntil(step.sid, T0.add(days=10) if step.future else T0.subtract(hours=1))
    if isinstance(step, PollSpec):
        timeout = None if step.ticks is None else f"{step.interval * step.ticks + step.interval // 2}s"
        fn = PollFn(token, step.sid, step.ready_after, step.raise_first)
        return Poll(step.sid, fn, interval=f"{step.interval}s", timeout=timeout)
    if isinstance(step, PauseSpec):
        return Pause(step.sid)
    assert isinstance(step, AllSpec)
    return All(*(command(p, token, attempt) for p in step.parts))


class CheckFailed(Exception):
    """A check inside the generated workflow failed (also recorded in ``CHECK_FAILURES``)."""


def check(token: str, ok: bool, message: str) -> None:
    """A check made by workflow code: record a failure where the test sees it, then stop the run."""
    if not ok:
        with _lock:
            CHECK_FAILURES[token].append(message)
        raise CheckFailed(message)


def plain(step: StepSpec, value: Any, token: str) -> Any:
    """The JSON form of a yielded value; also checks its Python type and shape (see ``check``)."""
    if isinstance(step, AllSpec):
        ok = isinstance(value, list) and len(value) == len(step.parts)
        check(token, ok, f"All {step.sid} yielded {value!r}, not a list of {len(step.parts)}")
        return [plain(p, v, token) for p, v in zip(step.parts, value, strict=True)]
    if isinstance(step, RunSpec):
        check(token, type(value) is Result, f"Run {step.sid} yielded {value!r}, not a Result")
        check(token, value.sid == step.sid, f"Run {step.sid} yielded the result of {value.sid}")
        return ["result", value.sid, value.size]
    if isinstance(step, PollSpec):
        check(token, type(value) is PollResult, f"Poll {step.sid} yielded {value!r}, not a PollResult")
        ok = value.data is None if value.timed_out else isinstance(value.data, dict)
        check(token, ok, f"Poll {step.sid} yielded {value!r}")
        return ["poll", value.timed_out, value.data]
    if isinstance(step, WaitSpec):  # the event's data, fast-forward data, or None on timeout
        ok = value is None or (
            isinstance(value, dict) and (value.get("event") == step.event or "ff" in value)
        )
        check(token, ok, f"WaitFor {step.sid} ({step.event!r}) yielded {value!r}")
        return value
    check(token, value is None, f"{type(step).__name__} {step.sid} yielded {value!r}, not None")
    return value


@workflow("generic")
def generic(ctx: pgflow.Context[Any]) -> Any:
    token = ctx.input["token"]
    out = []
    for step in SPECS[token].steps:
        try:
            value = plain(step, (yield command(step, token, ctx.attempt)), token)
        except StepFailedError as exc:
            if not step.catch:
                raise
            value = ["caught", exc.step_id, exc.error_type, exc.attempts]
        if not getattr(_speculative, "on", False):
            with _lock:
                VALUES[token][(ctx.attempt, step.sid)].append(value)
        out.append(value)
    return out


def register(scenario: Scenario) -> str:
    token = f"t{next(_tokens)}"
    SPECS[token] = scenario
    return token


def forget(token: str) -> None:
    SPECS.pop(token, None)
    EFFECTS.pop(token, None)
    VALUES.pop(token, None)
    CHECK_FAILURES.pop(token, None)


# ---------------------------------------------------------------------------------- strategies

_actions = {
    kind: st.lists(st.sampled_from(options), max_size=3).map(tuple) for kind, options in ACTIONS.items()
}


@st.composite
def run_specs(draw: st.DrawFn, sid: str, in_all: bool = False) -> RunSpec:
    mode = draw(st.sampled_from(["ok", "ok", "ok", "fail", "fatal", "flaky"]))
    return RunSpec(
        sid, mode, draw(st.integers(1, 2)), draw(st.none() | st.integers(1, 3)),
        catch=False if in_all else draw(st.booleans()),
    )  # fmt: skip


@st.composite
def wait_specs(draw: st.DrawFn, sid: str) -> WaitSpec:
    return WaitSpec(
        sid, draw(st.sampled_from(EVENTS)), draw(st.sampled_from([None, 30, 600])), draw(st.booleans()),
        draw(_actions["wait_for"]), picky=draw(st.sampled_from([False, False, False, True])),
    )  # fmt: skip


@st.composite
def delay_specs(draw: st.DrawFn, sid: str) -> DelaySpec:
    return DelaySpec(sid, draw(st.sampled_from([1, 60, 3600])), draw(_actions["delay"]))


@st.composite
def step_specs(draw: st.DrawFn, index: int) -> StepSpec:
    sid = f"s{index}"
    kind = draw(st.sampled_from(["run", "run", "wait", "delay", "until", "poll", "pause", "all"]))
    if kind == "run":
        return draw(run_specs(sid))
    if kind == "wait":
        return draw(wait_specs(sid))
    if kind == "delay":
        return draw(delay_specs(sid))
    if kind == "until":
        return UntilSpec(sid, draw(st.booleans()), draw(_actions["wait_until"]))
    if kind == "poll":
        return PollSpec(
            sid, draw(st.integers(1, 4)), draw(st.sampled_from([10, 60])), draw(st.none() | st.integers(0, 3)),
            draw(st.booleans()), draw(_actions["poll"]),
        )  # fmt: skip
    if kind == "pause":
        return PauseSpec(sid, draw(_actions["pause"]))
    parts = []
    for j in range(draw(st.integers(2, 3))):
        part_kind = draw(st.sampled_from(["run", "run", "wait", "delay"]))
        part_id = f"{sid}.{j}"
        if part_kind == "run":
            parts.append(draw(run_specs(part_id, in_all=True)))
        elif part_kind == "wait":
            parts.append(draw(wait_specs(part_id)))
        else:
            parts.append(draw(delay_specs(part_id)))
    return AllSpec(tuple(parts), draw(st.booleans()))


@st.composite
def scenarios(draw: st.DrawFn, max_steps: int = 7) -> Scenario:
    steps = tuple(draw(step_specs(i)) for i in range(draw(st.integers(1, max_steps))))
    base = Scenario(steps)
    ids = sorted(base.by_id())
    waiting_ids = [s.sid for s in base.flat() if not isinstance(s, RunSpec)]
    visit_events = draw(st.lists(st.tuples(st.sampled_from(waiting_ids), st.sampled_from(EVENTS)),
                                 max_size=2, unique_by=lambda t: t[0])) if waiting_ids else []  # fmt: skip
    return attrs.evolve(
        base,
        retries=draw(st.integers(0, 2)),
        timeout=draw(st.sampled_from([None, None, "1800s", "2 days"])),
        crash_before=frozenset(draw(st.lists(st.sampled_from(ids), max_size=2))),
        crash_after=frozenset(draw(st.lists(st.sampled_from(ids), max_size=2))),
        visit_events=tuple(visit_events),
    )


ops = st.tuples(
    st.lists(
        st.one_of(
            st.tuples(st.just("advance"), st.sampled_from([1, 10, 30, 60, 600, 3600])),
            st.tuples(st.just("event"), st.sampled_from(EVENTS)),
            st.tuples(st.sampled_from(["pause", "resume", "ff", "idle"]), st.none()),
        ),
        max_size=12,
    ),
    st.sampled_from([False] * 9 + [True]),  # sometimes the script ends by cancelling the run
).map(lambda t: [*t[0], ("cancel", None)] if t[1] else t[0])


# ------------------------------------------------------------------------- checked live replayer


def decisions_equal(a: Any, b: Any) -> bool:
    return bool(a == b)


class CheckedReplayer(Replayer):
    """The processor's Replayer, checked: before each live decision, a fresh Replayer over the same
    history (what a replay from scratch would load) must decide exactly the same."""

    checks = 0

    def __init__(self, workflow: Any, run: Any, history: Any) -> None:
        super().__init__(workflow, run, history)
        self._stored = dict(history)  # what the store holds: a replay from scratch loads all of it
        self._taken: set[int] = set()

    def record(self, rec: Any) -> None:
        super().record(rec)
        self._stored[rec.step_id] = rec

    def decide(self, now: pendulum.DateTime, mailbox: Any = ()) -> Any:
        fresh = Replayer(self.workflow, self.run, dict(self._stored))
        try:
            expected = fresh.decide(now, [e for e in mailbox if e.id not in self._taken])
        finally:
            fresh.close()
        actual = super().decide(now, mailbox)
        self._stored.update((rec.step_id, rec) for rec in actual.writes)
        self._taken.update(event_id for event_id, _ in actual.consumed)
        assert actual == expected, (
            f"live generator decided\n  {actual}\nreplay from scratch decided\n  {expected}"
        )
        type(self).checks += 1
        return actual


@contextmanager
def checked_processor() -> Iterator[None]:
    with mock.patch.object(pgflow.protocol, "Replayer", CheckedReplayer):
        yield


# ----------------------------------------------------------------------------------- the driver


class BlockingFace:
    """An AsyncHarness called from blocking code: each coroutine method runs to its end on the face's
    own event loop (one per player, in this thread), everything else passes through."""

    def __init__(self, harness: AsyncHarness) -> None:
        self._harness = harness
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._harness, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self._loop.run_until_complete(attr(*args, **kwargs))

    def close(self) -> None:
        self._loop.run_until_complete(self._harness.close())
        self._loop.close()


class Player:
    """Runs one scenario on its own Harness and checks the invariants after every round."""

    def __init__(self, scenario: Scenario, *, crashes: bool = True, driver: str = "blocking") -> None:
        self.scenario = scenario if crashes else scenario.without_crashes()
        self.token = register(self.scenario)
        self.clock = SimClock(T0)
        if driver == "asyncio":  # the AsyncHarness (the protocol's asyncio driver), driven from here
            self.h: Any = BlockingFace(AsyncHarness(workflows=[generic], clock=self.clock, lease=LEASE))
        else:
            self.h = Harness(workflows=[generic], clock=self.clock, lease=LEASE)
        for sid in sorted(self.scenario.crash_before):
            self.h.crash_before(sid)
        for sid in sorted(self.scenario.crash_after):
            self.h.crash_after(sid)
        self.specs = self.scenario.by_id()
        self.visits: Counter[str] = Counter()
        self.rounds = 0
        self.sent: list[int] = []
        self.sent_at: list[pendulum.DateTime] = []
        self.names: list[str] = []
        self.completed: dict[str, pgflow.StepRecord] = {}
        self.deadlines: dict[str, tuple[Any, Any]] = {}
        self.effects_at_completion: dict[str, int] = {}
        self.run_id = self.h.start_workflow(
            generic, {"token": self.token}, retries=self.scenario.retries, timeout=self.scenario.timeout
        ).id
        for spec in self.scenario.flat():
            if isinstance(spec, WaitSpec) and spec.early:
                self.send(spec.event)

    def close(self) -> None:
        self.h.close()
        forget(self.token)

    # client actions ------------------------------------------------------------------------------

    def send(self, event: str) -> None:
        serial = len(self.sent)
        try:
            self.h.trigger_event(self.run_id, event, {"n": serial, "event": event})
        except InvalidStateError:
            assert self.run().status in TERMINAL
            return
        self.sent.append(serial)
        self.sent_at.append(self.clock.now())
        self.names.append(event)

    def run(self) -> pgflow.WorkflowRun:
        return self.h.get_run(self.run_id)

    def next_due(self) -> None:
        """Move the clock to the next moment anything is due (a timer, a backoff, a lease expiry)."""
        due = self.h.store.next_due(["generic"])
        assert due is not None, f"run is stuck: {self.run()}"
        if due > self.clock.now():
            self.clock.set(due)

    def hold(self, seconds: int, event: str | None = None, *, late: bool = False) -> None:
        """Hold the run, let time pass and an event arrive (before or after): nothing may move but the
        workflow timeout, which a held run obeys too (SPEC §5); then resume."""
        before = self.run()
        self.h.pause_workflow(self.run_id)
        if event is not None and not late:
            self.send(event)
        self.h.advance(f"{seconds}s")
        if event is not None and late:
            self.send(event)
        held = self.run()
        if held.status == "failed" and held.error is not None and held.error.type == "WorkflowTimeoutError":
            assert held.timeout_at is not None and held.timeout_at <= self.clock.now(), "timed out early"
            return
        assert held.status == "paused" and held.held, f"held run moved: {held.status}"
        assert {k: r for k, r in held.timeline.items() if r.status != "waiting"} == {
            k: r for k, r in before.timeline.items() if r.status != "waiting"
        }, "a held run recorded progress"
        self.h.resume_workflow(self.run_id)

    def act(self, waiting: pgflow.Waiting) -> None:
        sid, kind = waiting.step_id, waiting.kind
        spec = self.specs[sid]
        visit = self.visits[sid]
        self.visits[sid] += 1
        if visit == 0:
            for target, event in self.scenario.visit_events:
                if target == sid:
                    self.send(event)
        actions = getattr(spec, "actions", ())
        action = actions[visit] if visit < len(actions) else PROGRESS[kind]
        if action == "send" or (action == "timeout" and waiting.wake_at is None):
            self.send(waiting.event or "")
        elif action == "twice":
            self.send(waiting.event or "")
            self.send(waiting.event or "")
        elif action == "ff":
            self.h.fast_forward_workflow(self.run_id, {"ff": sid})
        elif action == "hold":
            self.hold(5 if kind == "wait_for" else 90, waiting.event)
        elif action == "hold_late":  # past any WaitFor deadline, then the event
            self.hold(700, waiting.event, late=True)
        elif action in ("advance", "timeout"):
            self.next_due()
        else:
            assert action == "resume"
            self.h.resume_workflow(self.run_id)

    def apply(self, op: tuple[str, Any]) -> None:
        """One client operation at an arbitrary moment (time-based, not progress-based)."""
        name, arg = op
        try:
            if name == "advance":
                self.h.advance(f"{arg}s")
            elif name == "event":
                self.send(arg)
            elif name == "pause":
                self.h.pause_workflow(self.run_id)
            elif name == "resume":
                self.h.resume_workflow(self.run_id)
            elif name == "ff":
                self.h.fast_forward_workflow(self.run_id, {"ff": "op"})
            elif name == "cancel":
                self.h.cancel_workflow(self.run_id)
            else:
                assert name == "idle"
        except InvalidStateError:
            pass  # e.g. resuming a run that is not held: refused, and nothing changed
        self.h.run_until_idle()
        self.check()

    def play(self) -> pgflow.WorkflowRun:
        """Drive the run to its end: react to each waiting state as the scenario says."""
        for self.rounds in range(MAX_ROUNDS):
            self.h.run_until_idle()
            run = self.check()
            if run.status in TERMINAL:
                return run
            if run.held:
                self.h.resume_workflow(self.run_id)
            elif run.status != "paused" or run.waiting is None:  # backoff, or leased by a "dead" worker
                self.next_due()
            else:
                self.act(run.waiting)
        raise AssertionError(f"run did not finish in {MAX_ROUNDS} rounds: {self.run()}")

    # invariants ----------------------------------------------------------------------------------

    def check(self) -> pgflow.WorkflowRun:
        run = self.run()
        self.check_workflow_checks()
        self.check_records(run)
        self.check_events(run)
        self.check_budget(run)
        self.check_determinism(run)
        return run

    def check_workflow_checks(self) -> None:
        """No check inside the workflow failed (there, a failure only fails the run)."""
        failures = CHECK_FAILURES.get(self.token)
        assert not failures, f"checks inside the workflow failed: {failures}"

    def check_records(self, run: pgflow.WorkflowRun) -> None:
        """Completed records never change, and completed steps never run again."""
        effects = EFFECTS[self.token]
        for sid, rec in run.timeline.items():
            if rec.kind in ("wait_for", "poll"):  # deadlines are computed once, when first reached
                first = self.deadlines.setdefault(sid, (rec.started_at, rec.timeout_at))
                assert (rec.started_at, rec.timeout_at) == first, (
                    f"{sid}: deadline {first} became {rec.timeout_at}"
                )
            if sid in self.completed:
                assert rec == self.completed[sid], (
                    f"recorded outcome of {sid} changed: {self.completed[sid]} -> {rec}"
                )
                if sid in self.effects_at_completion:
                    assert effects[sid] == self.effects_at_completion[sid], f"completed step {sid} ran again"
            elif rec.status == "completed":
                self.completed[sid] = rec
                if rec.kind in ("run", "poll"):
                    self.effects_at_completion[sid] = effects[sid]
        assert set(self.completed) <= set(run.timeline), "a recorded outcome disappeared"

    def check_events(self, run: pgflow.WorkflowRun) -> None:
        """Every delivered event is either consumed by exactly one WaitFor or still in the mailbox."""
        box = [e.data["n"] for e in self.h.store.mailbox(self.run_id)]  # type: ignore[attr-defined]
        consumed = self.h.store.consumed_events(self.run_id)  # type: ignore[attr-defined]
        assert len(set(consumed.values())) == len(consumed), "one WaitFor consumed two events"
        taken = []
        for sid in consumed.values():
            rec = run.timeline[sid]
            assert rec.kind == "wait_for" and rec.status == "completed" and not rec.timed_out
            serial = rec.output["n"]
            taken.append(serial)
            if rec.timeout_at is not None:
                assert self.sent_at[serial] < rec.timeout_at, (
                    f"{sid} took event #{serial}, sent after its deadline"
                )
            picky = getattr(self.specs[sid], "picky", False)
            older = [e for e in box if e < serial and self.name_of(e) == rec.event and not (picky and e % 2)]
            assert not older, f"{sid} took event #{serial} while older {rec.event!r} events {older} waited"
        assert sorted(box + taken) == self.sent, (
            f"events lost or duplicated: sent {self.sent}, got {box} + {taken}"
        )
        for sid, rec in run.timeline.items():
            if rec.timed_out:
                assert rec.timeout_at is not None and rec.completed_at is not None
                assert rec.completed_at >= rec.timeout_at, f"{sid} timed out before its deadline"

    def name_of(self, serial: int) -> str:
        return self.names[serial]

    def check_budget(self, run: pgflow.WorkflowRun) -> None:
        """Retry counts never exceed their budgets; a crash adds at most one recorded attempt to a
        step (a step whose start was recorded when the worker died counts that attempt)."""
        assert run.retry_count <= self.scenario.retries
        crashes = len(self.scenario.crash_before) + len(self.scenario.crash_after)
        for sid, rec in run.timeline.items():
            spec = self.specs[sid]
            if isinstance(spec, RunSpec):
                budget = (spec.retry or 1) + crashes
                assert 1 <= rec.attempts <= budget, f"{sid}: {rec.attempts} attempts, {crashes} crash(es)"

    def check_determinism(self, run: pgflow.WorkflowRun) -> None:
        """Two fresh Replayers over the recorded history decide the same."""
        if run.status == "running":
            return  # leased by a "dead" worker: its in-flight writes are not history
        box = self.h.store.mailbox(self.run_id)  # type: ignore[attr-defined]
        info = ReplayInput(run.id, run.workflow_id, run.resource_id, run.retry_count, run.input)
        decisions = []
        _speculative.on = True  # e.g. a held run's replay may take an event that fast-forward then overrides
        try:
            for _ in range(2):
                replayer = Replayer(generic, info, dict(run.timeline))
                try:
                    decisions.append(replayer.decide(self.clock.now(), box))
                finally:
                    replayer.close()
        finally:
            _speculative.on = False
        assert decisions[0] == decisions[1], f"replays differ:\n  {decisions[0]}\n  {decisions[1]}"

    def check_values(self) -> None:
        """Every generator that reached a yield (first execution, replays) saw the same value there."""
        for key, seen in VALUES[self.token].items():
            values = [_mask_attempts(v) for v in seen]  # a crash that lost a failure re-runs its step
            assert all(v == values[0] for v in values), f"{key}: first execution and replay saw {seen}"


@attrs.frozen
class Played:
    run: pgflow.WorkflowRun
    effects: dict[str, int]
    sent: int
    crashes: int  # crash points that fired
    rounds: int


def play(
    scenario: Scenario, *, crashes: bool = True, ops: Sequence[tuple[str, Any]] = (), driver: str = "blocking"
) -> Played:
    """Drive ``scenario`` to its end on a fresh Harness (``driver="asyncio"``: an AsyncHarness),
    checking every invariant along the way; ``ops`` are applied first, at arbitrary moments."""
    player = Player(scenario, crashes=crashes, driver=driver)
    try:
        for op in ops:
            player.apply(op)
        run = player.play()
        player.check_workflow_checks()
        player.check_values()
        faults = player.h._faults  # the crash points left armed never fired
        armed = len(player.scenario.crash_before) + len(player.scenario.crash_after)
        fired = armed - len(faults.before) - len(faults.after)
        return Played(run, dict(EFFECTS[player.token]), len(player.sent), fired, player.rounds)
    finally:
        player.close()


def outcome(run: pgflow.WorkflowRun) -> tuple[Any, ...]:
    """What must not depend on crashes (messages may name the run: its id is masked; a caught step
    failure's attempt count may grow by the attempt a crash left recorded as started)."""
    err = run.error
    error = err and (err.type, err.message.replace(run.id, "<run>"), err.step_id)
    return (run.status, _mask_attempts(run.output), run.retry_count, error)


def _mask_attempts(value: Any) -> Any:
    if isinstance(value, list) and value[:1] == ["caught"]:
        return value[:3]
    if isinstance(value, list):
        return [_mask_attempts(v) for v in value]
    return value
