"""``pgflow.testing``: run workflows in milliseconds on a simulated clock (SPEC §11).

The Harness drives the very same ``RunProcessor`` the engine's workers use; only the driver
differs (synchronous, one thread, time moved by hand).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pendulum

from .. import serde
from ..arguments import INT64_MAX, add_time, check_id, check_int, shown
from ..backend import check_dsn, check_schema
from ..checking import replay_run, replayed_run
from ..definition import Workflow, check_workflows
from ..durations import check_duration, check_when, parse_when
from ..errors import InvalidArgumentError, WorkflowDefinitionError
from ..execution import StepCaller
from ..limits import limited_ids
from ..memory import MemoryStore
from ..operations import Operations, OperationSteps, OpGen, StoreCall
from ..processor import Crash, Faults, RunProcessor, Settings
from ..records import TERMINAL, WorkflowRun
from ..schedule_store import FireResult
from ..store import Claimed, Store

__all__ = ["AsyncHarness", "Harness", "SimClock", "replay"]

OWNER = "harness"
_NEVER_LATE = pendulum.duration(0)
_FIRE_LIMIT = 100


class SimClock:
    """A clock that only moves when told to."""

    def __init__(self, start: Any = None) -> None:
        self._now = check_when(start, "start") if start is not None else pendulum.now("UTC")

    def now(self) -> pendulum.DateTime:
        return self._now

    def advance(self, duration: Any) -> pendulum.DateTime:
        self._now = add_time(self._now, check_duration(duration, "duration"), "duration")
        return self._now

    def set(self, when: Any) -> pendulum.DateTime:
        target = check_when(when, "when")
        if target < self._now:
            raise ValueError(f"SimClock cannot go back in time (now {self._now}, asked for {target})")
        self._now = target
        return self._now


class HarnessSteps(OperationSteps):
    """What ``Harness`` and ``AsyncHarness`` share: definitions, fault injection and the simulated-time
    loops, written once as generators of store calls (the processing of a claimed run is one too),
    which the blocking harness performs and the asyncio one awaits."""

    clock: SimClock
    _workflows: dict[str, Workflow]
    _faults: Faults
    _settings: Settings

    def _setup(self, workflows: Iterable[Workflow], dsn: str | None, schema: str, clock: SimClock | None,
               lease: Any, min_poll_interval: Any) -> tuple[Workflow, ...]:  # fmt: skip
        found = check_workflows(workflows)
        check_dsn(dsn)
        check_schema(schema)
        self._settings = Settings(
            check_duration(lease, "lease"), check_duration(min_poll_interval, "min_poll_interval")
        )
        self.clock = _check_sim_clock(clock) if clock is not None else SimClock()
        self._ops_clock = self.clock
        self._workflows = {}
        self._faults = Faults()
        return found

    def _add_workflow(self, workflow: Workflow) -> bool:
        """Add a definition; False when this very one is known already."""
        if not isinstance(workflow, Workflow):
            raise WorkflowDefinitionError(
                f"register() takes a Workflow (from @workflow), got {shown(workflow)}"
            )
        known = self._workflows.get(workflow.id)
        if known is workflow:
            return False
        if known is not None:
            raise WorkflowDefinitionError(f"another workflow is already registered with id {workflow.id!r}")
        self._workflows[workflow.id] = workflow
        return True

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        return dict(self._workflows)

    def _ops_workflows(self) -> Mapping[str, Workflow]:
        return self._workflows

    def _process_one(self, item: Claimed) -> Any:
        """Process a claimed run until it yields (blocking, or a coroutine); a Crash leaves it leased."""
        raise NotImplementedError

    # fault injection -----------------------------------------------------------------------------

    def crash_before(self, step_id: str) -> None:
        """The next execution stops before ``step_id``'s outcome is recorded, like a killed process."""
        self._faults.before.add(check_id(step_id, "step_id"))

    def crash_after(self, step_id: str) -> None:
        """The next execution stops right after ``step_id``'s outcome is recorded."""
        self._faults.after.add(check_id(step_id, "step_id"))

    # the simulated-time loops --------------------------------------------------------------------

    def _run_until_idle_steps(self, max_rounds: int) -> OpGen[None]:
        check_int(max_rounds, "max_rounds", 1, INT64_MAX)
        yield from self._fire_schedules_steps()
        ids, lease = list(self._workflows), self._settings.lease
        for _ in range(max_rounds):
            claimed = yield self._claim_call(ids, lease)
            if not claimed:
                return
            for item in claimed:
                yield self._process_call(item)
        raise RuntimeError(f"run_until_idle: work still ready after {max_rounds} rounds (a busy loop?)")

    def _claim_call(self, ids: list[str], lease: pendulum.Duration) -> StoreCall:
        now, limited = self.clock.now(), limited_ids(self._workflows)
        return lambda store: store.claim(OWNER, ids, now, lease, 50, limited)

    def _process_call(self, item: Claimed) -> StoreCall:
        return lambda _store: self._process_one(item)

    def _next_due_steps(self) -> OpGen[pendulum.DateTime | None]:
        ids = list(self._workflows)
        due: pendulum.DateTime | None = yield lambda store: store.next_due(ids)
        return due

    def _advance_steps(self, duration: Any) -> OpGen[None]:
        target = add_time(self.clock.now(), check_duration(duration, "duration"), "duration")
        yield from self._run_until_idle_steps(100_000)
        while (due := (yield from self._next_moment_steps())) is not None and due <= target:
            if due > self.clock.now():
                self.clock.set(due)
            yield from self._run_until_idle_steps(100_000)
        self.clock.set(target)
        yield from self._run_until_idle_steps(100_000)

    def _run_until_complete_steps(self, run_id: str, max_steps: int) -> OpGen[WorkflowRun]:
        check_id(run_id, "run_id")
        check_int(max_steps, "max_steps", 1, INT64_MAX)
        for _ in range(max_steps):
            yield from self._run_until_idle_steps(100_000)
            run = yield from self._get_run_steps(run_id, None)
            if run.status in TERMINAL:
                return run
            due = yield from self._next_due_steps()
            if due is None:
                raise RuntimeError(
                    f"run {run_id} is {run.status} and nothing is scheduled: it waits for "
                    f"{_waiting_on(run)}; send it with trigger_event/resume_workflow/fast_forward_workflow"
                )
            due = (yield from self._next_moment_steps(due)) or due  # ticks before it fire on the way
            if due > self.clock.now():
                self.clock.set(due)
        raise RuntimeError(f"run {run_id} did not finish within {max_steps} timer hops")

    def _wait_steps(
        self, run_id: str, until: Any, timeout: Any, resource_id: str | None
    ) -> OpGen[WorkflowRun]:
        wanted, span = self._wait_arguments(run_id, until, timeout, resource_id)
        deadline = self.clock.now() + span
        while True:
            yield from self._run_until_idle_steps(100_000)
            run = yield from self._get_run_steps(run_id, resource_id)
            if run.status.value in wanted:
                return run
            due = yield from self._next_moment_steps()
            if due is None or due > deadline:
                self.clock.set(max(deadline, self.clock.now()))
                raise TimeoutError(f"run {run_id} is still {run.status} after waiting for {sorted(wanted)}")
            if due > self.clock.now():
                self.clock.set(due)

    # schedules (SPEC §16): ticks are moments like timers; a tick the clock jumped over was missed ---

    def _fire_schedules_steps(self) -> OpGen[None]:
        """Start the runs of the schedule ticks due now. The harness is never late: a tick is on time
        only at its own time, so the ticks ``clock.set`` jumped over count as missed (``catch_up``)."""
        now = self.clock.now()
        while True:
            fired: FireResult = yield lambda store: store.fire_schedules(now, _NEVER_LATE, _FIRE_LIMIT)
            if not fired.more:
                return

    def _next_moment_steps(self, due: pendulum.DateTime | None = None) -> OpGen[pendulum.DateTime | None]:
        """The next moment anything happens: the earliest of the next due run (``due`` when given)
        and the next schedule tick."""
        if due is None:
            due = yield from self._next_due_steps()
        tick: pendulum.DateTime | None = yield lambda store: store.next_schedule_tick()
        return min((t for t in (due, tick) if t is not None), default=None)


class Harness(HarnessSteps, Operations):
    """Every client method, plus ``run_until_idle``, ``advance``, ``run_until_complete`` and
    fault injection (``crash_before`` / ``crash_after``). Blocking; see ``AsyncHarness``."""

    def __init__(
        self,
        workflows: Iterable[Workflow] = (),
        *,
        dsn: str | None = None,
        schema: str = "pgflow",
        clock: SimClock | None = None,
        lease: Any = "30s",
        min_poll_interval: Any = "1s",
    ) -> None:
        found = self._setup(workflows, dsn, schema, clock, lease, min_poll_interval)
        self._pool: Any = None
        self.store: Store = self._open_store(dsn, schema)
        self._caller = StepCaller()
        self._processor = RunProcessor(self.store, self._workflows, self.clock, self._settings, self._caller,
                                       self._faults, resolve=self._resolve)  # fmt: skip
        for wf in found:
            self.register(wf)

    def _open_store(self, dsn: str | None, schema: str) -> Store:
        if dsn is None:
            return MemoryStore()
        from psycopg_pool import ConnectionPool

        from ..postgres import PostgresStore

        self._pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True, kwargs={"autocommit": True})
        store: Store = PostgresStore(self._pool, schema)
        store.migrate()
        return store

    def register(self, workflow: Workflow) -> None:
        if self._add_workflow(workflow):
            self.store.register_workflow(workflow.id, workflow.steps, self.clock.now(), workflow.settings)

    def _resolve(self, target: Any) -> Any:
        if isinstance(target, str):
            return self._target(target, self.store)
        return target

    def _ops_store(self) -> Store:
        return self.store

    def _process_one(self, item: Claimed) -> None:
        with contextlib.suppress(Crash):  # after a Crash the run stays leased, as after a real crash
            self._processor.process(item)

    # driving ---------------------------------------------------------------------------------

    def run_until_idle(self, max_rounds: int = 100_000) -> None:
        """Execute all work that is ready at the current simulated time."""
        self._do(self._run_until_idle_steps(max_rounds))

    def advance(self, duration: Any) -> None:
        """Move the clock by ``duration``, firing each due timer at its own time."""
        self._do(self._advance_steps(duration))

    def run_until_complete(self, run_id: str, max_steps: int = 10_000) -> WorkflowRun:
        """Skip from timer to timer until the run is terminal; raise if it waits on something external."""
        return self._do(self._run_until_complete_steps(run_id, max_steps))

    def wait_for_run(
        self, run_id: str, *, until: Any = TERMINAL, timeout: Any = "30s", resource_id: str | None = None
    ) -> WorkflowRun:
        """Like the client's, in simulated time: runs work and timers up to ``timeout`` from now."""
        return self._do(self._wait_steps(run_id, until, timeout, resource_id))

    def close(self) -> None:
        self._caller.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_sim_clock(clock: object) -> SimClock:
    """The Harness moves its clock by hand: anything with SimClock's now/advance/set."""
    if not all(callable(getattr(clock, method, None)) for method in ("now", "advance", "set")):
        raise InvalidArgumentError(
            f"clock must be a pgflow.testing.SimClock (now/advance/set), got {type(clock).__name__}: {shown(clock)}"
        )
    return clock  # type: ignore[return-value]


def _waiting_on(run: WorkflowRun) -> str:
    if run.held:
        return "resume_workflow (it is held)"
    w = run.waiting
    if w is None and run.status == "pending":
        return "a place under its workflow's concurrency limits (another run of it must end first)"
    if w is None:
        return "nothing known"
    if w.kind == "wait_for":
        return f"event {w.event!r} at step {w.step_id!r}"
    return f"its {w.kind} step {w.step_id!r}"


# replaying exported histories (SPEC §14) ------------------------------------------------------------


def replay(workflow: Workflow, history: Any, *, now: Any = None) -> WorkflowRun:
    """Replay an exported run (``pgflow export RUN_ID``: a dict, a JSON string, or a path to a JSON
    file) against ``workflow`` and return the run as it would stand: completed, waiting, failed, or
    running the next step. Nothing executes. Raises ``NonDeterminismError`` when the code no longer
    replays the history. ``now`` defaults to the run's ``updated_at`` (deterministic)."""
    if not isinstance(workflow, Workflow):
        raise InvalidArgumentError(f"workflow must be a Workflow (from @workflow), got {shown(workflow)}")
    run = _exported_run(history)
    moment = run.updated_at if now is None else parse_when(now)
    return replayed_run(run, replay_run(workflow, run, moment), moment)


def _exported_run(history: Any) -> WorkflowRun:
    data = history
    if isinstance(history, os.PathLike) or (
        isinstance(history, str) and not history.lstrip().startswith("{")
    ):
        try:
            data = Path(history).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read the history file {shown(history)}: {exc}") from None
    if isinstance(data, str | bytes):
        data = serde.loads(data)
    if not isinstance(data, dict) or not isinstance(data.get("timeline"), list):
        raise InvalidArgumentError(
            f"history must be a run exported by `pgflow export` (an object with a timeline list), got {shown(data)}"
        )
    fields = {**data, "timeline": {rec["step_id"]: rec for rec in data["timeline"]}}
    try:
        return serde.converter.structure(fields, WorkflowRun)
    except Exception as exc:
        raise InvalidArgumentError(f"history is not a run exported by `pgflow export`: {exc}") from None


from .async_harness import AsyncHarness  # noqa: E402 - it builds on HarnessSteps above
