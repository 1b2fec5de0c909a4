"""The client methods of SPEC §4, written once; ``Client``, ``Engine`` and ``Harness`` mix them in.

Every method checks all its arguments before it touches the store (SPEC §13), so bad input is a
named ``InvalidArgumentError`` / ``InvalidDurationError`` / ``InvalidInputError`` and stores nothing.
A host provides ``_ops_store()`` (migrating lazily), ``_ops_clock`` and ``_ops_workflows()``; waiting
for a run uses the store's ``watch_run`` (one LISTEN connection per store feeds every waiter).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, overload

import attrs
import pendulum

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
from .definition import I, Workflow, WorkflowRef
from .durations import DurationLike, check_duration, check_optional_duration, parse_duration
from .errors import InvalidArgumentError, SerializationError, UnknownWorkflowError
from .records import TERMINAL, Event, Progress, RunPage, RunStatus, StepRecord, WorkflowRun
from .serde import to_json
from .static_steps import StepInfo, WorkflowInfo
from .store import NewRun, RunQuery, RunRow, Store

__all__ = ["Operations", "run_defaults", "to_public"]


def to_public(row: RunRow, steps: Iterable[StepRecord]) -> WorkflowRun:
    return WorkflowRun(
        id=row.id, workflow_id=row.workflow_id, resource_id=row.resource_id, status=RunStatus(row.status),
        input=row.input, output=row.output, error=row.error, current_step_id=row.current_step_id,
        timeline={s.step_id: s for s in steps}, waiting=row.waiting, wake_at=row.wake_at, held=row.held,
        retry_count=row.retry_count, max_retries=row.max_retries, idempotency_key=row.idempotency_key,
        created_at=row.created_at, updated_at=row.updated_at, paused_at=row.paused_at,
        resumed_at=row.resumed_at, completed_at=row.completed_at, timeout_at=row.timeout_at,
        parent_run_id=row.parent_run_id, parent_step_id=row.parent_step_id,
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


class Operations:
    _ops_clock: Any

    def _ops_store(self) -> Store:
        raise NotImplementedError

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

    def _target(self, workflow: Any, store: Store) -> Workflow | WorkflowRef:
        if isinstance(workflow, Workflow | WorkflowRef):
            return workflow
        wid = check_id(workflow, "workflow")
        local = self._ops_workflows().get(wid)
        if local is not None:
            return local
        if store.workflow_steps(wid) is None:
            raise UnknownWorkflowError(
                f"unknown workflow {wid!r}: no engine has registered it in this database"
            )
        return WorkflowRef(wid)

    @overload
    def start_workflow(
        self, workflow: Workflow[I, Any] | WorkflowRef[I, Any], input: I | Mapping[str, Any] = ..., *,
        resource_id: str | None = None, idempotency_key: str | None = None,
        timeout: DurationLike | None = None, retries: int | None = None,
    ) -> WorkflowRun: ...  # fmt: skip

    @overload
    def start_workflow(
        self, workflow: str, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: DurationLike | None = None, retries: int | None = None,
    ) -> WorkflowRun: ...  # fmt: skip

    def start_workflow(
        self, workflow: Any, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: Any = None, retries: int | None = None,
    ) -> WorkflowRun:  # fmt: skip
        """Start a run; returns it ``pending``. See SPEC §4. Typed: ``input`` must be the workflow's
        input type ``I`` (or a mapping of its fields) for a ``Workflow[I, O]`` / ``WorkflowRef[I, O]``;
        anything for a workflow id."""
        self._check_target(workflow)
        resource_id = check_optional_id(resource_id, "resource_id")
        idempotency_key = check_optional_id(idempotency_key, "idempotency_key")
        retries = None if retries is None else check_int(retries, "retries", 0, INT32_MAX)
        timeout = check_optional_duration(timeout, "timeout")
        store = self._ops_store()
        target = self._target(workflow, store)
        stored_input = target.validate_input(input)
        max_retries, span, backoff = run_defaults(target, store, retries, timeout)
        now = self._now()
        timeout_at = add_time(now, span, "timeout") if span is not None else None
        new = NewRun(str(uuid.uuid4()), target.id, resource_id, stored_input, max_retries, backoff,
                     idempotency_key, timeout_at, now)  # fmt: skip
        row, created = store.start_run(new)
        if created:
            self._ops_started(row)
        return to_public(row, [] if created else store.get(row.id, None)[1])

    # acting on runs ------------------------------------------------------------------------------------

    def trigger_event(
        self, run_id: str, event: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        """Deliver ``event`` to the run's mailbox (kept until a WaitFor consumes it)."""
        check_id(run_id, "run_id")
        check_id(event, "event")
        check_optional_id(resource_id, "resource_id")
        payload = _json_data({} if data is None else data, "data", run_id)
        self._ops_store().deliver_event(run_id, resource_id, event, payload, self._now())
        return self.get_run(run_id, resource_id=resource_id)

    def _change(self, run_id: str, action: str, resource_id: str | None, data: Any = None) -> WorkflowRun:
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        if data is not None:
            data = _json_data(data, "data", run_id)
        self._ops_store().change(run_id, resource_id, action, data, self._now())
        return self.get_run(run_id, resource_id=resource_id)

    def pause_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Hold the run: nothing further executes until ``resume_workflow``."""
        return self._change(run_id, "pause", resource_id)

    def resume_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Release a held run and/or complete its current ``Pause`` step."""
        return self._change(run_id, "resume", resource_id)

    def cancel_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        """Cancel the run (and its child runs)."""
        return self._change(run_id, "cancel", resource_id)

    def fast_forward_workflow(
        self, run_id: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        """Skip the current wait (delivering ``data`` to a WaitFor or Poll) and release a hold."""
        return self._change(run_id, "fast_forward", resource_id, data)

    # reading ----------------------------------------------------------------------------------------

    def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        row, steps = self._ops_store().get(run_id, resource_id)
        return to_public(row, steps)

    def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        check_id(run_id, "run_id")
        check_optional_id(resource_id, "resource_id")
        store = self._ops_store()
        row, steps = store.get(run_id, resource_id)
        local = self._ops_workflows().get(row.workflow_id)
        static: tuple[StepInfo, ...] = local.steps if local else (store.workflow_steps(row.workflow_id) or ())
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

    def get_runs(
        self, *, resource_id: str | None = None, workflow_id: str | None = None, statuses: Any = None,
        limit: int = 20, starting_after: str | None = None, ending_before: str | None = None,
    ) -> RunPage:  # fmt: skip
        """A page of runs, newest first; cursors are run ids (SPEC §8)."""
        query = RunQuery(
            check_optional_id(resource_id, "resource_id"), check_optional_id(workflow_id, "workflow_id"),
            None if statuses is None else check_statuses(statuses, "statuses"), _limit(limit),
            check_optional_id(starting_after, "starting_after"), check_optional_id(ending_before, "ending_before"),
        )  # fmt: skip
        if starting_after is not None and ending_before is not None:
            raise InvalidArgumentError("pass starting_after or ending_before, not both")
        store = self._ops_store()
        rows, has_more, has_prev = store.list_runs(query)
        timelines = store.timelines([r.id for r in rows])
        items = [to_public(r, timelines[r.id]) for r in rows]
        return RunPage(
            items, rows[-1].id if rows and has_more else None, rows[0].id if rows and has_prev else None,
            has_more, has_prev,
        )  # fmt: skip

    def wait_for_run(
        self, run_id: str, *, until: Any = TERMINAL, timeout: Any = "30s", resource_id: str | None = None
    ) -> WorkflowRun:
        """Block until the run's status is in ``until``; ``TimeoutError`` otherwise."""
        wanted, span = self._wait_arguments(run_id, until, timeout, resource_id)
        deadline = time.monotonic() + span.total_seconds()
        with self._ops_store().watch_run(run_id) as waiter:  # before the first read: no change missed
            while True:
                run = self.get_run(run_id, resource_id=resource_id)
                if run.status.value in wanted:
                    return run
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"run {run_id} is still {run.status} after waiting for {sorted(wanted)}"
                    )
                waiter.wait(left)

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

    def count_runs(self, *, workflow_id: str | None = None, resource_id: str | None = None) -> dict[str, int]:
        """How many runs have each status: every status is a key (``"pending"`` … ``"cancelled"``),
        zero included. Filters combine with AND, as in ``get_runs``."""
        found = self._ops_store().count_runs(
            check_optional_id(workflow_id, "workflow_id"), check_optional_id(resource_id, "resource_id")
        )
        return {status.value: found.get(status.value, 0) for status in RunStatus}

    def list_workflows(self) -> list[WorkflowInfo]:
        """Every workflow registered in the schema (by any engine), by id."""
        return self._ops_store().list_workflows()

    def get_mailbox(self, run_id: str, *, resource_id: str | None = None) -> list[Event]:
        """The run's unconsumed events (delivered, not yet taken by a ``WaitFor``), oldest first."""
        return self._ops_store().run_mailbox(
            check_id(run_id, "run_id"), check_optional_id(resource_id, "resource_id")
        )

    def get_child_runs(self, run_id: str, *, resource_id: str | None = None) -> list[WorkflowRun]:
        """The runs started by the run's ``Child`` steps, oldest first. With ``resource_id``, the
        run must belong to it and only children of that resource are listed."""
        store = self._ops_store()
        rows = store.child_runs(check_id(run_id, "run_id"), check_optional_id(resource_id, "resource_id"))
        timelines = store.timelines([r.id for r in rows])
        return [to_public(r, timelines[r.id]) for r in rows]

    # re-driving a failed or cancelled run (SPEC §14) ----------------------------------------------

    def retry_workflow(
        self, run_id: str, *, from_step: str | None = None, resource_id: str | None = None
    ) -> WorkflowRun:
        """Make a failed or cancelled run pending again: completed steps are replayed, failed ones (and
        ``from_step`` with every later step) execute again. See docs/client-and-workers.md."""
        check_id(run_id, "run_id")
        check_optional_id(from_step, "from_step")
        check_optional_id(resource_id, "resource_id")
        row = self._ops_store().retry_run(run_id, resource_id, from_step, self._now())
        self._ops_started(row)  # ready again, like a new run: nudge the local worker
        return self.get_run(run_id, resource_id=resource_id)


def run_defaults(
    target: Workflow | WorkflowRef, store: Store, retries: int | None, timeout: Any
) -> tuple[int, pendulum.Duration | None, float]:
    """Retries, timeout and backoff for a new run: the call's overrides, else the definition's
    (from the registered settings when only an id or a ref is at hand)."""
    defaults = target.settings if isinstance(target, Workflow) else (store.workflow_settings(target.id) or {})
    max_retries = retries if retries is not None else int(defaults.get("retries") or 0)
    raw_timeout = timeout if timeout is not None else defaults.get("timeout")
    span = parse_duration(raw_timeout) if raw_timeout is not None else None
    return max_retries, span, float(defaults.get("retry_backoff") or 1.0)


def _run_fields(run: WorkflowRun) -> dict[str, Any]:
    return {f.name: getattr(run, f.name) for f in attrs.fields(WorkflowRun)}
