"""The client methods of SPEC §4, written once for the blocking and the asyncio hosts.

Each method is a generator in :class:`OperationSteps` that checks all its arguments before it touches
the store (SPEC §13: bad input is a named ``InvalidArgumentError`` / ``InvalidDurationError`` /
``InvalidInputError`` and stores nothing), then yields the store calls it needs — each a function of
the store — and receives their answers. :class:`Operations` (``Client``, ``Engine``, ``Harness``)
performs them with blocking calls; ``AsyncOperations`` (``async_operations.py``: ``AsyncClient``,
``AsyncEngine``, ``AsyncHarness``) awaits them. Only ``wait_for_run`` is written twice (a loop over
a waiter, blocking or awaited), around the same pure checks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

import attrs
import pendulum

from . import schedules as schedule_rules
from . import telemetry
from .arguments import (
    INT32_MAX,
    INT64_MAX,
    add_time,
    check_id,
    check_int,
    check_optional_id,
    check_statuses,
    shown,
)
from .cron import check_cron, check_timezone
from .definition import I, Workflow, WorkflowRef
from .durations import DurationLike, check_duration, check_optional_duration, parse_duration
from .errors import InvalidArgumentError, SerializationError, UnknownWorkflowError
from .records import TERMINAL, Event, Progress, RunPage, RunStatus, StepRecord, WorkflowRun
from .schedule_store import not_found as schedule_not_found
from .schedules import CatchUp, Schedule, ScheduleInfo, ScheduleRow, check_catch_up
from .serde import to_json
from .static_steps import StepInfo, WorkflowInfo
from .store import NewRun, PruneQuery, RunQuery, RunRow, Store

__all__ = [
    "PRUNE_BATCH", "OpGen", "OperationSteps", "Operations", "StoreCall", "drive", "run_defaults", "to_public",
]  # fmt: skip

T = TypeVar("T")
PRUNE_BATCH = 1000  # runs deleted per transaction by prune (SPEC §15)
MAX_PRIORITY = 1000  # priorities run from -1000 to 1000 (SPEC §16)
StoreCall = Callable[[Any], Any]  # one call on the store: its answer (awaitable on an asyncio store)
OpGen = Generator[StoreCall, Any, T]


def drive(gen: OpGen[T], store_of: Callable[[], Any]) -> T:
    """Run an operation with blocking store calls; the store is asked for at the first call, so
    bad arguments are reported before a database is opened."""
    answer: Any = None
    store: Any = None
    while True:
        try:
            call = gen.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if store is None:
            store = store_of()
        answer = call(store)


def to_public(row: RunRow, steps: Iterable[StepRecord]) -> WorkflowRun:
    return WorkflowRun(
        id=row.id, workflow_id=row.workflow_id, resource_id=row.resource_id, status=RunStatus(row.status),
        input=row.input, output=row.output, error=row.error, current_step_id=row.current_step_id,
        timeline={s.step_id: s for s in steps}, waiting=row.waiting, wake_at=row.wake_at, held=row.held,
        retry_count=row.retry_count, max_retries=row.max_retries, idempotency_key=row.idempotency_key,
        created_at=row.created_at, updated_at=row.updated_at, paused_at=row.paused_at,
        resumed_at=row.resumed_at, completed_at=row.completed_at, timeout_at=row.timeout_at,
        parent_run_id=row.parent_run_id, parent_step_id=row.parent_step_id,
        concurrency_key=row.concurrency_key, priority=row.priority,
    )  # fmt: skip


def _statuses(values: Any, name: str = "until") -> tuple[str, ...]:
    """Statuses as strings (kept for importers; see :func:`arguments.check_statuses`)."""
    return check_statuses(values, name)


def _limit(value: object) -> int:
    """``limit`` clamped to 1-100 (SPEC §8); a non-int or one beyond 64 bits is rejected."""
    return max(1, min(check_int(value, "limit", -INT64_MAX - 1, INT64_MAX), 100))


def _json_data(data: Any, name: str, run_id: str) -> Any:
    """``data`` as JSON for storage, or an InvalidArgumentError naming ``name``."""
    try:
        return to_json(data, root=name)
    except SerializationError as exc:
        raise InvalidArgumentError(f"{name} for run {run_id} is not serialisable: {exc}") from None


class OperationSteps:
    """The client methods as generators of store calls (see the module doc). A host provides
    ``_ops_clock`` and may override ``_ops_workflows()`` and ``_ops_started()``."""

    _ops_clock: Any

    def _ops_workflows(self) -> Mapping[str, Workflow]:
        return {}

    def _ops_started(self, run: RunRow) -> None:
        """Hook: a run was just created, or retried (the engine nudges its local worker)."""

    def _now(self) -> pendulum.DateTime:
        now: pendulum.DateTime = self._ops_clock.now()
        return now

    # starting -------------------------------------------------------------------------------------

    @staticmethod
    def _check_target(workflow: Any) -> None:
        if not isinstance(workflow, Workflow | WorkflowRef):
            check_id(workflow, "workflow")

    def _target_steps(self, workflow: Any) -> OpGen[Workflow | WorkflowRef]:
        """The workflow a call names: a definition or ref as given, a local definition by id, else a
        ref to one some engine registered (``UnknownWorkflowError`` when none did)."""
        target, _ = yield from self._target_and_settings(workflow)
        return target

    def _target_and_settings(
        self, workflow: Any
    ) -> OpGen[tuple[Workflow | WorkflowRef, dict[str, Any] | None]]:
        """``_target_steps``, with the registered settings when it had to read them (one query)."""
        if isinstance(workflow, Workflow | WorkflowRef):
            return workflow, None
        wid = check_id(workflow, "workflow")
        local = self._ops_workflows().get(wid)
        if local is not None:
            return local, None
        settings = yield lambda store: store.workflow_settings(wid)
        if settings is None:
            raise UnknownWorkflowError(
                f"unknown workflow {wid!r}: no engine has registered it in this database"
            )
        return WorkflowRef(wid), settings

    def _start_workflow_steps(
        self, workflow: Any, input: Any, resource_id: str | None, idempotency_key: str | None,
        timeout: Any, retries: int | None, concurrency_key: str | None = None, priority: int = 0,
    ) -> OpGen[WorkflowRun]:  # fmt: skip
        self._check_target(workflow)
        resource_id = check_optional_id(resource_id, "resource_id")
        idempotency_key = check_optional_id(idempotency_key, "idempotency_key")
        concurrency_key = check_optional_id(concurrency_key, "concurrency_key")
        priority = check_int(priority, "priority", -MAX_PRIORITY, MAX_PRIORITY)
        retries = None if retries is None else check_int(retries, "retries", 0, INT32_MAX)
        timeout = check_optional_duration(timeout, "timeout")
        target, settings = yield from self._target_and_settings(workflow)
        stored_input = target.validate_input(input)
        max_retries, span, backoff = yield from run_defaults(target, retries, timeout, settings)
        now = self._now()
        timeout_at = add_time(now, span, "timeout") if span is not None else None
        new = NewRun(str(uuid.uuid4()), target.id, resource_id, stored_input, max_retries, backoff,
                     idempotency_key, timeout_at, now, priority=priority, concurrency_key=concurrency_key,
                     trace_context=telemetry.carrier())  # fmt: skip
        row, created = yield lambda store: store.start_run(new)
        if created:
            self._ops_started(row)
            return to_public(row, [])
        _, steps = yield lambda store: store.get(row.id, None)
        return to_public(row, steps)

    # acting on runs ------------------------------------------------------------------------------------

    def _trigger_event_steps(
        self, run_id: str, event: str, data: Any, resource_id: str | None
    ) -> OpGen[WorkflowRun]:
        check_id(run_id, "run_id")
        check_id(event, "event")
        check_optional_id(resource_id, "resource_id")
        payload = _json_data({} if data is None else data, "data", run_id)
        now = self._now()
        written = yield lambda store: store.deliver_event(run_id, resource_id, event, payload, now)
        if written is not None:
            return to_public(*written)
        return (yield from self._get_run_steps(run_id, resource_id))

    def _change_steps(
        self, run_id: str, action: str, resource_id: str | None, data: Any = None
    ) -> OpGen[WorkflowRun]:
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        if data is not None:
            data = _json_data(data, "data", run_id)
        now = self._now()
        yield lambda store: store.change(run_id, resource_id, action, data, now)
        run = yield from self._get_run_steps(run_id, resource_id)
        if action == "cancel":
            telemetry.cancelled(run)  # counted in pgflow.runs where it happens: here
        return run

    def _retry_workflow_steps(
        self, run_id: str, from_step: str | None, resource_id: str | None
    ) -> OpGen[WorkflowRun]:
        check_id(run_id, "run_id")
        check_optional_id(from_step, "from_step")
        check_optional_id(resource_id, "resource_id")
        now = self._now()
        row = yield lambda store: store.retry_run(run_id, resource_id, from_step, now)
        self._ops_started(row)  # ready again, like a new run: nudge the local worker
        return (yield from self._get_run_steps(run_id, resource_id))

    # reading ----------------------------------------------------------------------------------------

    def _get_run_steps(self, run_id: str, resource_id: str | None) -> OpGen[WorkflowRun]:
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        row, steps = yield lambda store: store.get(run_id, resource_id)
        return to_public(row, steps)

    def _check_progress_steps(self, run_id: str, resource_id: str | None) -> OpGen[Progress]:
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        row, steps = yield lambda store: store.get(run_id, resource_id)
        local = self._ops_workflows().get(row.workflow_id)
        if local is not None:
            static: tuple[StepInfo, ...] = local.steps
        else:
            static = (yield lambda store: store.workflow_steps(row.workflow_id)) or ()
        total = len(static)
        done = len({s.step_id for s in steps if s.status == "completed" and s.kind != "patch"})
        if row.status == RunStatus.COMPLETED:
            pct = 100.0
        else:
            pct = round(min(done / total * 100, 100.0), 2) if total else 0.0
        run = to_public(row, steps)
        return Progress(
            **_run_fields(run), completion_percentage=pct, completed_steps=done, total_steps=total
        )

    def _get_runs_steps(
        self, resource_id: str | None, workflow_id: str | None, statuses: Any, limit: int,
        starting_after: str | None, ending_before: str | None,
    ) -> OpGen[RunPage]:  # fmt: skip
        query = RunQuery(
            check_optional_id(resource_id, "resource_id"), check_optional_id(workflow_id, "workflow_id"),
            None if statuses is None else check_statuses(statuses, "statuses"), _limit(limit),
            check_optional_id(starting_after, "starting_after"), check_optional_id(ending_before, "ending_before"),
        )  # fmt: skip
        if starting_after is not None and ending_before is not None:
            raise InvalidArgumentError("pass starting_after or ending_before, not both")
        rows, has_more, has_prev = yield lambda store: store.list_runs(query)
        timelines = yield lambda store: store.timelines([r.id for r in rows])
        items = [to_public(r, timelines[r.id]) for r in rows]
        return RunPage(
            items, rows[-1].id if rows and has_more else None, rows[0].id if rows and has_prev else None,
            has_more, has_prev,
        )  # fmt: skip

    def _wait_arguments(
        self, run_id: object, until: object, timeout: object, resource_id: object
    ) -> tuple[set[str], pendulum.Duration]:
        """``wait_for_run``'s arguments, checked: the statuses wanted and the timeout (which must
        not reach past year 9999 from now)."""
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        wanted = set(check_statuses(until, "until"))
        if not wanted:
            raise InvalidArgumentError(f"until must name at least one run status, got {shown(until)}")
        span = check_duration(timeout, "timeout")
        add_time(self._now(), span, "timeout")
        return wanted, span

    # reads for the dashboard: counts, registered workflows, mailbox, child runs ---------------------

    def _count_runs_steps(self, workflow_id: str | None, resource_id: str | None) -> OpGen[dict[str, int]]:
        wid = check_optional_id(workflow_id, "workflow_id")
        rid = check_optional_id(resource_id, "resource_id")
        found = yield lambda store: store.count_runs(wid, rid)
        return {status.value: found.get(status.value, 0) for status in RunStatus}

    def _list_workflows_steps(self) -> OpGen[list[WorkflowInfo]]:
        found: list[WorkflowInfo] = yield lambda store: store.list_workflows()
        return found

    def _get_mailbox_steps(self, run_id: str, resource_id: str | None) -> OpGen[list[Event]]:
        rid, scope = check_id(run_id, "run_id"), check_optional_id(resource_id, "resource_id")
        found: list[Event] = yield lambda store: store.run_mailbox(rid, scope)
        return found

    def _get_child_runs_steps(self, run_id: str, resource_id: str | None) -> OpGen[list[WorkflowRun]]:
        rid, scope = check_id(run_id, "run_id"), check_optional_id(resource_id, "resource_id")
        rows = yield lambda store: store.child_runs(rid, scope)
        timelines = yield lambda store: store.timelines([r.id for r in rows])
        return [to_public(r, timelines[r.id]) for r in rows]

    # retention (SPEC §15) ---------------------------------------------------------------------------

    def _prune_query(
        self, older_than: object, statuses: object, workflow_id: object, resource_id: object
    ) -> PruneQuery:
        """``prune``'s arguments, checked (nothing is deleted when one is wrong); the cutoff is the
        client's clock minus ``older_than``."""
        span = check_duration(older_than, "older_than")
        wanted = tuple(dict.fromkeys(check_statuses(statuses, "statuses")))
        live = [s for s in wanted if RunStatus(s) not in TERMINAL]
        if not wanted or live:
            got = f"{live[0]!r} is not" if live else "none given"
            raise InvalidArgumentError(
                f"statuses must name terminal statuses (completed, failed, cancelled): {got}"
            )
        wid = check_optional_id(workflow_id, "workflow_id")
        rid = check_optional_id(resource_id, "resource_id")
        now = self._now()
        try:
            cutoff = now - span
        except OverflowError:  # before year 1: no run ended then
            cutoff = pendulum.datetime(1, 1, 1, tz="UTC")
        return PruneQuery(cutoff, wanted, wid, rid)

    def _prune_steps(
        self, older_than: object, statuses: object, workflow_id: object, resource_id: object, dry_run: object
    ) -> OpGen[int]:
        """Delete batch after batch (each its own transaction) until one deletes nothing; with
        ``dry_run``, count what that would delete."""
        query = self._prune_query(older_than, statuses, workflow_id, resource_id)
        if not isinstance(dry_run, bool):
            raise InvalidArgumentError(f"dry_run must be True or False, got {shown(dry_run)}")
        if dry_run:
            counted: int = yield lambda store: store.count_prunable(query)
            return counted
        return (yield from self._prune_batches(query, exclusive=False)) or 0

    def _prune_batches(self, query: PruneQuery, *, exclusive: bool) -> OpGen[int | None]:
        """Runs deleted by batches of at most :data:`PRUNE_BATCH`, until a batch deletes none.
        ``exclusive`` (the engines' passes): only while no other store prunes the schema — None
        when another one held it from the start."""
        total: int | None = None
        while True:
            deleted = yield lambda store: store.prune_runs(query, PRUNE_BATCH, exclusive)
            if deleted is None:  # another engine prunes (from the start, or since our last batch)
                return total
            total = (total or 0) + deleted
            if deleted == 0:
                return total

    # schedules (SPEC §16) -------------------------------------------------------------------------

    def _schedule_row_steps(
        self, schedule_id: object, workflow: Any, cron: object, input: Any, timezone: object, catch_up: object
    ) -> OpGen[ScheduleRow]:
        """A schedule as it will be stored: every argument checked, then the workflow resolved
        (``UnknownWorkflowError``) and the input validated as ``start_workflow`` does."""
        sid = check_id(schedule_id, "schedule_id")
        self._check_target(workflow)
        expr, zone, policy = check_cron(cron), check_timezone(timezone), check_catch_up(catch_up)
        target = yield from self._target_steps(workflow)
        stored_input = target.validate_input(input)
        return schedule_rules.new_row(sid, target.id, expr, zone, stored_input, policy, self._now())

    def _create_schedule_steps(
        self, schedule_id: object, workflow: Any, cron: object, input: Any, timezone: object, catch_up: object
    ) -> OpGen[ScheduleInfo]:
        row = yield from self._schedule_row_steps(schedule_id, workflow, cron, input, timezone, catch_up)
        written: ScheduleRow = yield lambda store: store.put_schedule(row)
        return written.info()

    def _put_schedules_steps(self, schedules: Sequence[Schedule]) -> OpGen[None]:
        """An engine's ``schedules=``, at start: all checked and resolved before any is written."""
        rows: list[ScheduleRow] = []
        for s in schedules:
            rows.append((yield from self._schedule_row_steps(
                s.schedule_id, s.workflow, s.cron, s.input, s.timezone, s.catch_up
            )))  # fmt: skip
        for row in rows:
            yield lambda store, row=row: store.put_schedule(row)  # type: ignore[misc]

    def _get_schedule_steps(self, schedule_id: object) -> OpGen[ScheduleInfo]:
        sid = check_id(schedule_id, "schedule_id")
        row: ScheduleRow | None = yield lambda store: store.get_schedule(sid)
        if row is None:
            raise schedule_not_found(sid)
        return row.info()

    def _list_schedules_steps(self) -> OpGen[list[ScheduleInfo]]:
        rows: list[ScheduleRow] = yield lambda store: store.list_schedules()
        return [row.info() for row in rows]

    def _pause_schedule_steps(self, schedule_id: object, pause: bool) -> OpGen[ScheduleInfo]:
        sid = check_id(schedule_id, "schedule_id")
        now = self._now()
        row: ScheduleRow = yield lambda store: store.set_schedule_paused(sid, pause, now)
        return row.info()

    def _delete_schedule_steps(self, schedule_id: object) -> OpGen[None]:
        sid = check_id(schedule_id, "schedule_id")
        yield lambda store: store.delete_schedule(sid)


def still_waiting(run: WorkflowRun, wanted: set[str], left: float) -> bool:
    """Whether ``wait_for_run`` waits on: False when the run reached a wanted status; TimeoutError
    when it has not and no time is ``left``."""
    if run.status.value in wanted:
        return False
    if left <= 0:
        raise TimeoutError(f"run {run.id} is still {run.status} after waiting for {sorted(wanted)}")
    return True


class Operations(OperationSteps):
    """The client methods with blocking store calls. A host provides ``_ops_store()`` (migrating
    lazily); waiting for a run uses the store's ``watch_run`` (one LISTEN connection per store)."""

    def _ops_store(self) -> Store:
        raise NotImplementedError

    def _do(self, gen: OpGen[T]) -> T:
        return drive(gen, self._ops_store)

    def _target(self, workflow: Any, store: Store) -> Workflow | WorkflowRef:
        return drive(self._target_steps(workflow), lambda: store)

    @overload
    def start_workflow(
        self, workflow: Workflow[I, Any] | WorkflowRef[I, Any], input: I | Mapping[str, Any] = ..., *,
        resource_id: str | None = None, idempotency_key: str | None = None,
        timeout: DurationLike | None = None, retries: int | None = None,
        concurrency_key: str | None = None, priority: int = 0,
    ) -> WorkflowRun: ...  # fmt: skip

    @overload
    def start_workflow(
        self, workflow: str, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: DurationLike | None = None, retries: int | None = None,
        concurrency_key: str | None = None, priority: int = 0,
    ) -> WorkflowRun: ...  # fmt: skip

    def start_workflow(
        self, workflow: Any, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: Any = None, retries: int | None = None,
        concurrency_key: str | None = None, priority: int = 0,
    ) -> WorkflowRun:  # fmt: skip
        """Start a run; returns it ``pending``. See SPEC §4. Typed: ``input`` must be the workflow's
        input type ``I`` (or a mapping of its fields) for a ``Workflow[I, O]`` / ``WorkflowRef[I, O]``;
        anything for a workflow id."""
        steps = self._start_workflow_steps(
            workflow, input, resource_id, idempotency_key, timeout, retries, concurrency_key, priority
        )
        with telemetry.starting(workflow) as started:  # the run stores the trace context current in it
            run = self._do(steps)
            started(run)
        return run

    def trigger_event(
        self, run_id: str, event: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        """Deliver ``event`` to the run's mailbox (kept until a WaitFor consumes it)."""
        return self._do(self._trigger_event_steps(run_id, event, data, resource_id))

    def pause_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Hold the run: nothing further executes until ``resume_workflow``."""
        return self._do(self._change_steps(run_id, "pause", resource_id))

    def resume_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Release a held run and/or complete its current ``Pause`` step."""
        return self._do(self._change_steps(run_id, "resume", resource_id))

    def cancel_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Cancel the run (and its child runs)."""
        return self._do(self._change_steps(run_id, "cancel", resource_id))

    def fast_forward_workflow(
        self, run_id: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        """Skip the current wait (delivering ``data`` to a WaitFor or Poll) and release a hold."""
        return self._do(self._change_steps(run_id, "fast_forward", resource_id, data))

    def retry_workflow(
        self, run_id: str, *, from_step: str | None = None, resource_id: str | None = None
    ) -> WorkflowRun:
        """Make a failed or cancelled run pending again: completed steps are replayed, failed ones (and
        ``from_step`` with every later step) execute again. See docs/client-and-workers.md."""
        return self._do(self._retry_workflow_steps(run_id, from_step, resource_id))

    def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return self._do(self._get_run_steps(run_id, resource_id))

    def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        return self._do(self._check_progress_steps(run_id, resource_id))

    def get_runs(
        self, *, resource_id: str | None = None, workflow_id: str | None = None, statuses: Any = None,
        limit: int = 20, starting_after: str | None = None, ending_before: str | None = None,
    ) -> RunPage:  # fmt: skip
        """A page of runs, newest first; cursors are run ids (SPEC §8)."""
        return self._do(
            self._get_runs_steps(resource_id, workflow_id, statuses, limit, starting_after, ending_before)
        )

    def wait_for_run(
        self, run_id: str, *, until: Any = TERMINAL, timeout: Any = "30s", resource_id: str | None = None
    ) -> WorkflowRun:
        """Block until the run's status is in ``until``; ``TimeoutError`` otherwise."""
        wanted, span = self._wait_arguments(run_id, until, timeout, resource_id)
        deadline = time.monotonic() + span.total_seconds()
        with self._ops_store().watch_run(run_id) as waiter:  # before the first read: no change missed
            while True:
                run = self.get_run(run_id, resource_id=resource_id)
                left = deadline - time.monotonic()
                if not still_waiting(run, wanted, left):
                    return run
                waiter.wait(left)

    def count_runs(self, *, workflow_id: str | None = None, resource_id: str | None = None) -> dict[str, int]:
        """How many runs have each status: every status is a key (``"pending"`` … ``"cancelled"``),
        zero included. Filters combine with AND, as in ``get_runs``."""
        return self._do(self._count_runs_steps(workflow_id, resource_id))

    def list_workflows(self) -> list[WorkflowInfo]:
        """Every workflow registered in the schema (by any engine), by id."""
        return self._do(self._list_workflows_steps())

    def get_mailbox(self, run_id: str, *, resource_id: str | None = None) -> list[Event]:
        """The run's unconsumed events (delivered, not yet taken by a ``WaitFor``), oldest first."""
        return self._do(self._get_mailbox_steps(run_id, resource_id))

    def get_child_runs(self, run_id: str, *, resource_id: str | None = None) -> list[WorkflowRun]:
        """The runs started by the run's ``Child`` steps, oldest first. With ``resource_id``, the
        run must belong to it and only children of that resource are listed."""
        return self._do(self._get_child_runs_steps(run_id, resource_id))

    def prune(
        self, *, older_than: DurationLike, statuses: Any = TERMINAL, workflow_id: str | None = None,
        resource_id: str | None = None, dry_run: bool = False,
    ) -> int:  # fmt: skip
        """Delete the terminal runs (of ``statuses``, of the workflow and resource when given) that
        ended more than ``older_than`` ago, with their steps and events, in batches of at most 1,000
        runs per transaction; returns how many. Never a live run nor a child of a live run; a parent
        goes after its children. ``dry_run``: count them, delete nothing. See docs/operations.md."""
        return self._do(self._prune_steps(older_than, statuses, workflow_id, resource_id, dry_run))

    # schedules (SPEC §16) -------------------------------------------------------------------------

    def create_schedule(
        self, schedule_id: str, workflow: Workflow[Any, Any] | WorkflowRef[Any, Any] | str, cron: str, *,
        input: Any = None, timezone: str = "UTC", catch_up: CatchUp = "latest",
    ) -> ScheduleInfo:  # fmt: skip
        """Start a run of ``workflow`` with ``input`` at every tick of ``cron`` (5 fields, or 6 with
        seconds first) in ``timezone``; replaces a schedule of that id. See docs/schedules.md."""
        return self._do(self._create_schedule_steps(schedule_id, workflow, cron, input, timezone, catch_up))

    def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        """The schedule (``ScheduleNotFoundError`` when there is none of that id)."""
        return self._do(self._get_schedule_steps(schedule_id))

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the schema, by id."""
        return self._do(self._list_schedules_steps())

    def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Start nothing more until ``resume_schedule`` (the runs it started go on)."""
        return self._do(self._pause_schedule_steps(schedule_id, True))

    def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        """Continue from the next tick (the ticks of the pause are not caught up)."""
        return self._do(self._pause_schedule_steps(schedule_id, False))

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete the schedule; the runs it started stay."""
        self._do(self._delete_schedule_steps(schedule_id))


def run_defaults(
    target: Workflow | WorkflowRef, retries: int | None, timeout: Any, settings: dict[str, Any] | None = None
) -> OpGen[tuple[int, pendulum.Duration | None, float]]:
    """Retries, timeout and backoff for a new run: the call's overrides, else the definition's
    (the registered ``settings``, read unless given, when only an id or a ref is at hand)."""
    if isinstance(target, Workflow):
        defaults = target.settings
    elif settings is not None:
        defaults = settings
    else:
        defaults = (yield lambda store: store.workflow_settings(target.id)) or {}
    max_retries = retries if retries is not None else int(defaults.get("retries") or 0)
    raw_timeout = timeout if timeout is not None else defaults.get("timeout")
    span = parse_duration(raw_timeout) if raw_timeout is not None else None
    return max_retries, span, float(defaults.get("retry_backoff") or 1.0)


def _run_fields(run: WorkflowRun) -> dict[str, Any]:
    return {f.name: getattr(run, f.name) for f in attrs.fields(WorkflowRun)}
