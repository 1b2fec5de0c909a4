"""``RunProcessor``: executes one claimed run until it suspends, ends, or loses its lease.

This is the worker protocol, written once. The engine's worker threads, and the test harness,
both hand claimed runs to the same ``RunProcessor.process``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pendulum

from .commands import Child, Poll, Run, Transaction
from .definition import Workflow, WorkflowRef
from .errors import PgflowError, SerializationError, StorageError, WorkflowTimeoutError
from .execution import StepCaller, StepResult, execute_poll, execute_run
from .operations import run_defaults
from .records import RunError, StepRecord
from .replay import Complete, Execute, Fail, Replayer, ReplayInput, Suspend, error_of
from .store import (
    Batch,
    Claimed,
    CommitResult,
    CompleteRun,
    FailRun,
    KeepRunning,
    Lease,
    NewRun,
    ReleaseRun,
    RetryRun,
    RunOutcome,
    RunRow,
    StartChild,
    Store,
    SuspendRun,
)

log = logging.getLogger("pgflow.worker")
DateTime = pendulum.DateTime


class _LeaseLost(Exception):
    """Our lease on the run is gone (expired, taken over, or the run ended): stop touching it."""


class Crash(BaseException):
    """Raised by fault injection: the worker stops as a killed process would (no release)."""


@attrs.define
class Faults:
    """Harness fault injection: crash before a step's outcome is recorded, or right after."""

    before: set[str] = attrs.field(factory=set)
    after: set[str] = attrs.field(factory=set)

    def check_before(self, step_ids: list[str]) -> None:
        hit = self.before.intersection(step_ids)
        if hit:
            self.before.difference_update(hit)
            raise Crash(f"crash_before({sorted(hit)[0]!r})")

    def check_after(self, step_ids: list[str]) -> None:
        hit = self.after.intersection(step_ids)
        if hit:
            self.after.difference_update(hit)
            raise Crash(f"crash_after({sorted(hit)[0]!r})")


@attrs.define
class _Pending:
    steps: dict[str, StepRecord] = attrs.field(factory=dict)
    consumed: list[tuple[int, str]] = attrs.field(factory=list)
    children: list[StartChild] = attrs.field(factory=list)

    def add(self, steps: tuple[StepRecord, ...] | list[StepRecord], consumed: Any = ()) -> None:
        for rec in steps:
            self.steps[rec.step_id] = rec
        self.consumed.extend(consumed)

    def batch(self, outcome: RunOutcome) -> Batch:
        return Batch(tuple(self.steps.values()), tuple(self.consumed), outcome, tuple(self.children))

    def clear(self) -> None:
        self.steps.clear()
        self.consumed.clear()
        self.children.clear()

    def __bool__(self) -> bool:
        return bool(self.steps or self.consumed or self.children)


@attrs.frozen
class Settings:
    lease: pendulum.Duration
    min_poll_interval: pendulum.Duration


class RunProcessor:
    def __init__(
        self,
        store: Store,
        workflows: Mapping[str, Workflow],
        clock: Any,
        settings: Settings,
        caller: StepCaller,
        faults: Faults | None = None,
        resolve: Callable[[Any], Workflow | WorkflowRef] | None = None,
        stopping: Any = None,
    ) -> None:
        self.store = store
        self.workflows = workflows
        self.clock = clock
        self.settings = settings
        self.caller = caller
        self.faults = faults or Faults()
        self.resolve = resolve
        self.stopping = stopping  # a threading.Event: set on graceful stop

    def process(self, claimed: Claimed) -> None:
        """Drive the run; swallow nothing but a lost lease (which just ends our interest)."""
        current: Claimed | None = claimed
        try:
            while current is not None:
                current = self._process_once(current)
        except _LeaseLost:
            log.info("run %s: lease lost, leaving it to its new owner", claimed.run.id)

    def _process_once(self, claimed: Claimed) -> Claimed | None:
        run, lease = claimed.run, claimed.lease
        attempt = f", attempt {run.retry_count + 1}" if run.retry_count else ""
        log.info("run %s (%s): executing%s", run.id, run.workflow_id, attempt)
        now = self.clock.now()
        if run.timeout_at is not None and now >= run.timeout_at:
            self._commit(lease, Batch(outcome=FailRun(_timeout_error(run))))
            return None
        if run.held:
            self._commit(lease, Batch(outcome=ReleaseRun()))
            return None
        workflow = self.workflows[run.workflow_id]
        try:
            replayer = Replayer(workflow, self._replay_input(run), claimed.steps)
        except SerializationError as exc:  # the stored input no longer fits the workflow's input schema
            self._commit(lease, Batch(outcome=FailRun(error_of(exc))))
            return None
        try:
            return self._drive(replayer, claimed)
        finally:
            replayer.close()

    def _replay_input(self, run: RunRow) -> ReplayInput:
        return ReplayInput(
            run.id, run.workflow_id, run.resource_id, run.retry_count, run.input,
            self.settings.min_poll_interval, self.store.supports_transactions,
        )  # fmt: skip

    def _drive(self, replayer: Replayer, claimed: Claimed) -> Claimed | None:
        run, lease = claimed.run, claimed.lease
        pending = _Pending()
        while True:
            now = self.clock.now()
            if run.timeout_at is not None and now >= run.timeout_at:
                self._commit(lease, pending.batch(FailRun(_timeout_error(run))))
                return None
            decision = replayer.decide(now, claimed.mailbox)
            pending.add(decision.writes, decision.consumed)
            action = decision.action
            if isinstance(action, Execute):
                if self.stopping is not None and self.stopping.is_set():
                    self._commit(lease, pending.batch(ReleaseRun()))  # graceful stop: give the run back
                    return None
                if pending and not self._flush(lease, pending):
                    return None
                fatal = self._execute(action, replayer, pending, run, lease)
                if fatal is not None:
                    self._commit(lease, pending.batch(FailRun(fatal)))
                    return None
                continue
            return self._finish(action, pending, claimed)

    def _finish(self, action: Any, pending: _Pending, claimed: Claimed) -> Claimed | None:
        run, lease = claimed.run, claimed.lease
        if isinstance(action, Suspend):
            result = self._commit(
                lease, pending.batch(SuspendRun(action.waiting, action.wake_at, run.mailbox_seq))
            )
            if result.mailbox_changed:
                return self.store.reload(lease)  # events arrived meanwhile: decide again from scratch
            return None
        if isinstance(action, Complete):
            self._commit(lease, pending.batch(CompleteRun(action.output)))
            return None
        assert isinstance(action, Fail)
        outcome: RunOutcome = FailRun(action.error)
        if action.retryable and run.retry_count < run.max_retries:
            delay = run.retry_backoff * 2**run.retry_count
            outcome = RetryRun(action.error, self.clock.now() + pendulum.duration(seconds=delay))
        self._commit(lease, pending.batch(outcome))
        return None

    # committing ------------------------------------------------------------------------------------

    def _commit(self, lease: Lease, batch: Batch) -> CommitResult:
        ids = [s.step_id for s in batch.steps]
        self.faults.check_before(ids)
        result = self.store.commit(lease, self.clock.now(), self.settings.lease, batch)
        if result.ok:
            _log_outcome(lease.run_id, batch.outcome)
            self.faults.check_after(ids)
        return result

    def _flush(self, lease: Lease, pending: _Pending) -> bool:
        """Record what is pending and keep running; False when we must stop (lost or held)."""
        result = self._commit(lease, pending.batch(KeepRunning()))
        pending.clear()
        if result.ok and result.held:
            self._commit(lease, Batch(outcome=ReleaseRun()))
        return result.ok and not result.held

    # executing steps -----------------------------------------------------------------------------------

    def _execute(
        self, action: Execute, replayer: Replayer, pending: _Pending, run: RunRow, lease: Lease
    ) -> RunError | None:
        results = self._execute_all(action.steps, run, lease, pending)
        # crash_before: the step ran but the process dies before its outcome is recorded
        self.faults.check_before([cmd.step_id for cmd, _ in action.steps])
        fatal = None
        for result in results:
            replayer.record(result.record)
            pending.add([result.record])
            fatal = fatal or result.fatal
        return fatal

    def _execute_all(self, steps: Any, run: RunRow, lease: Lease, pending: _Pending) -> list[StepResult]:
        """Execute the steps of one decision, in order of results; several ``Run``/``Poll`` steps (an
        ``All``) run concurrently, each on its own thread. Transaction/Child steps write through
        ``pending`` and stay sequential."""
        parallel = [i for i, (cmd, _) in enumerate(steps) if isinstance(cmd, Run | Poll)]
        results: list[StepResult | None] = [None] * len(steps)
        if len(parallel) > 1:
            with ThreadPoolExecutor(len(parallel), thread_name_prefix="pgflow-all") as pool:
                futures = {
                    i: pool.submit(self._execute_one, steps[i][0], steps[i][1], run, lease, pending)
                    for i in parallel
                }
                for i, future in futures.items():
                    results[i] = future.result()
        for i, (cmd, rec) in enumerate(steps):
            if results[i] is None:
                results[i] = self._execute_one(cmd, rec, run, lease, pending)
        return [r for r in results if r is not None]

    def _execute_one(
        self, cmd: Any, rec: StepRecord | None, run: RunRow, lease: Lease, pending: _Pending
    ) -> StepResult:
        if isinstance(cmd, Run):
            return execute_run(self.caller, cmd, rec, self.clock, run.id, run.retry_count)
        if isinstance(cmd, Poll):
            return execute_poll(self.caller, cmd, rec, self.clock, run.id, run.retry_count)
        if isinstance(cmd, Transaction):
            return self._transaction(cmd, rec, run, lease, pending)
        assert isinstance(cmd, Child)
        return self._start_child(cmd, run, pending)

    def _transaction(
        self, cmd: Transaction, rec: StepRecord | None, run: RunRow, lease: Lease, pending: _Pending
    ) -> StepResult:
        now = self.clock.now()
        base = rec or StepRecord(
            cmd.step_id, "transaction", "waiting", started_at=now, run_attempt=run.retry_count
        )
        if cmd.step_id in self.faults.before:  # die inside the transaction: its writes roll back
            self.faults.before.discard(cmd.step_id)
            cmd = Transaction(cmd.step_id, _then_crash(cmd.fn, cmd.step_id), *cmd.args)
        try:
            result = self.store.commit(
                lease, now, self.settings.lease, pending.batch(KeepRunning()), transaction=(cmd, base)
            )
        except StorageError:
            raise  # the database failed, not the step: the run is retried after its lease expires
        except Exception as exc:  # fn raised: its writes were rolled back; record the failure normally
            err = error_of(exc, cmd.step_id)
            failed = attrs.evolve(base, status="failed", error=err, attempts=1, completed_at=self.clock.now())
            return StepResult(failed, err if isinstance(exc, SerializationError) else None)
        if not result.ok:
            raise _LeaseLost(run.id)
        pending.clear()
        record = result.transaction_result
        assert isinstance(record, StepRecord)
        return StepResult(record, record.error if record.status == "failed" else None)

    def _start_child(self, cmd: Child, run: RunRow, pending: _Pending) -> StepResult:
        now = self.clock.now()
        base = StepRecord(cmd.step_id, "child", "waiting", started_at=now, run_attempt=run.retry_count)
        try:
            target = self.resolve(cmd.workflow) if self.resolve else cmd.workflow
            stored_input = target.validate_input(cmd.input)
        except PgflowError as exc:
            err = error_of(exc, cmd.step_id)
            return StepResult(attrs.evolve(base, status="failed", error=err, attempts=1, completed_at=now))
        child_id = str(uuid.uuid4())
        definition = self.workflows.get(target.id, target)
        retries, span, backoff = run_defaults(definition, self.store, None, None)
        timeout_at = now + span if span is not None else None
        new = NewRun(child_id, target.id, cmd.resource_id, stored_input, retries, backoff, None, timeout_at, now,
                     parent_run_id=run.id, parent_step_id=cmd.step_id)  # fmt: skip
        pending.children.append(StartChild(new))
        return StepResult(attrs.evolve(base, output={"child_run_id": child_id}, attempts=1))


def _then_crash(fn: Callable[..., Any], step_id: str) -> Callable[..., Any]:
    def run_then_crash(conn: Any, *args: Any) -> Any:
        fn(conn, *args)
        raise Crash(f"crash_before({step_id!r})")

    return run_then_crash


def _log_outcome(run_id: str, outcome: RunOutcome) -> None:
    """One INFO line per run segment: what became of the run when the worker let it go."""
    if isinstance(outcome, KeepRunning) or not log.isEnabledFor(logging.INFO):
        return
    if isinstance(outcome, CompleteRun):
        text = "completed"
    elif isinstance(outcome, FailRun):
        text = f"failed: {outcome.error.type}: {outcome.error.message}"
    elif isinstance(outcome, RetryRun):
        text = f"attempt failed ({outcome.error.type}: {outcome.error.message}); retrying at {outcome.due_at}"
    elif isinstance(outcome, SuspendRun):
        w = outcome.waiting
        text = f"waiting at {w.kind} step {w.step_id!r}" if w else f"step retry at {outcome.wake_at}"
    else:
        text = "released"
    log.info("run %s: %s", run_id, text)


def _timeout_error(run: RunRow) -> RunError:
    msg = f"run {run.id} of workflow {run.workflow_id!r} exceeded its timeout (at {run.timeout_at})"
    return error_of(WorkflowTimeoutError(msg), run.current_step_id)
