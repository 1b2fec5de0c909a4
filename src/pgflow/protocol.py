"""The worker protocol, written once: a claimed run → replay → execute → record, until it stops.

:func:`process` is a generator of **effects** (commit a batch, reload the run, call step functions,
resolve a child workflow); a driver performs each effect and sends its result back. The blocking
driver (``processor.py``) serves the engine's worker threads and the Harness; an asyncio driver can
serve an event loop with the same protocol (psycopg's ``generators.py`` + ``waiting.py`` shape).
The protocol itself does no I/O: it reads the injected clock and decides.

Per step, one commit: a step's ``running`` record is written with the previous step's outcome,
in the same statement, before the step's code starts; the generator is advanced in memory first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import attrs
import pendulum

from . import run_rules
from . import step_records as records
from .arguments import add_time
from .commands import Child, Poll, Run, Transaction
from .definition import Workflow
from .errors import PgflowError, SerializationError, StorageError
from .execution import is_async
from .logs import run_extra
from .records import RunError, StepRecord
from .replay import Complete, Execute, Fail, Replayer, ReplayInput, Suspend
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
    SuspendRun,
)
from .transitions import RENEW_BELOW

__all__ = [
    "Call",
    "CallSteps",
    "ChildPlan",
    "Commit",
    "Crash",
    "Effect",
    "Env",
    "Faults",
    "Raised",
    "Reload",
    "ResolveChild",
    "Returned",
    "process",
]

log = logging.getLogger("pgflow.worker")
DateTime = pendulum.DateTime


# effects: what the protocol asks its driver to do ---------------------------------------------


@attrs.frozen
class Commit:
    """``store.commit(lease, now, lease_duration, batch, transaction)`` → :class:`CommitResult`.
    With ``transaction``, the step function runs inside it; its exception is thrown back."""

    lease: Lease
    now: DateTime
    batch: Batch
    transaction: tuple[Transaction, StepRecord] | None = None


@attrs.frozen
class Reload:
    """``store.reload(lease)`` → ``Claimed | None``."""

    lease: Lease


@attrs.frozen
class Call:
    """One step function call: ``fn(*args)``, abandoned after ``timeout`` seconds. ``step`` is the
    step's running record (its id, kind and attempt: what a driver's telemetry span shows)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    timeout: float | None
    what: str
    step: StepRecord | None = None


@attrs.frozen
class CallSteps:
    """Call these step functions (concurrently when several) → a :class:`Returned` or
    :class:`Raised` for each, in order."""

    calls: tuple[Call, ...]


@attrs.frozen
class ResolveChild:
    """The workflow a ``Child`` step starts and its run defaults → :class:`ChildPlan` (a
    ``PgflowError`` when it is unknown is thrown back). ``step``: the Child step's record."""

    workflow: Any
    step: StepRecord | None = None


Effect = Commit | Reload | CallSteps | ResolveChild


@attrs.frozen
class Returned:
    value: Any


@attrs.frozen
class Raised:
    error: Exception


@attrs.frozen
class ChildPlan:
    target: Any  # a Workflow or WorkflowRef: validates the child's input
    max_retries: int
    timeout: pendulum.Duration | None
    retry_backoff: float
    # the Child step's span, when traced: the child's parent (else the child keeps its parent's context)
    trace_context: dict[str, str] | None = None


# what the protocol is given ----------------------------------------------------------------------


class Crash(BaseException):
    """Raised by fault injection: the worker stops as a killed process would (no release)."""


class _LeaseLost(Exception):
    """Our lease on the run is gone (expired, taken over, or the run ended): stop touching it."""


class _Released(Exception):
    """The run was paused while we worked on it: it has been given back, stop touching it."""


@attrs.define
class Faults:
    """Harness fault injection: crash before a step's outcome is recorded, or right after."""

    before: set[str] = attrs.field(factory=set)
    after: set[str] = attrs.field(factory=set)

    def __bool__(self) -> bool:
        return bool(self.before or self.after)

    def check_before(self, step_ids: Sequence[str]) -> None:
        self._check(self.before, step_ids, "crash_before")

    def check_after(self, step_ids: Sequence[str]) -> None:
        self._check(self.after, step_ids, "crash_after")

    @staticmethod
    def _check(armed: set[str], step_ids: Sequence[str], what: str) -> None:
        hit = armed.intersection(step_ids)
        if hit:
            armed.difference_update(hit)
            raise Crash(f"{what}({sorted(hit)[0]!r})")


@attrs.frozen
class Env:
    """The protocol's fixed inputs: definitions, clock, settings and switches."""

    workflows: Mapping[str, Workflow]
    clock: Any
    lease: pendulum.Duration
    min_poll_interval: pendulum.Duration
    supports_transactions: bool
    faults: Faults = attrs.field(factory=Faults)
    stopping: Callable[[], bool] = lambda: False


Gen = Generator[Effect, Any, Any]


# pending writes ----------------------------------------------------------------------------------


@attrs.define
class _Pending:
    steps: dict[str, StepRecord] = attrs.field(factory=dict)
    consumed: list[tuple[int, str]] = attrs.field(factory=list)
    children: list[StartChild] = attrs.field(factory=list)
    discards: list[str] = attrs.field(factory=list)

    def add(
        self,
        steps: Sequence[StepRecord],
        consumed: Sequence[tuple[int, str]] = (),
        discards: Sequence[str] = (),
    ) -> None:
        for sid in discards:
            self.steps.pop(sid, None)
        self.discards.extend(discards)
        for rec in steps:
            self.steps[rec.step_id] = rec
        self.consumed.extend(consumed)

    def batch(self, outcome: RunOutcome) -> Batch:
        return Batch(
            tuple(self.steps.values()),
            tuple(self.consumed),
            outcome,
            tuple(self.children),
            tuple(self.discards),
        )

    def clear(self) -> None:
        self.steps.clear()
        self.consumed.clear()
        self.children.clear()
        self.discards.clear()

    def __bool__(self) -> bool:
        return bool(self.steps or self.consumed or self.children or self.discards)


# the protocol ----------------------------------------------------------------------------------


def process(claimed: Claimed, env: Env) -> Gen:
    """Drive one claimed run until it suspends, ends, is released or loses its lease.

    Any failure but a database one (``StorageError``) fails the run at once, so no run loops."""
    current: Claimed | None = claimed
    try:
        while current is not None:
            current = yield from _guarded(current, env)
    except _LeaseLost:
        log.info(
            "run %s: lease lost, leaving it to its new owner", claimed.run.id, extra=run_extra(claimed.run)
        )
    except _Released:
        log.debug("run %s: held by pause_workflow, released", claimed.run.id, extra=run_extra(claimed.run))


def _guarded(claimed: Claimed, env: Env) -> Gen:
    try:
        return (yield from _segment(claimed, env))
    except (StorageError, _LeaseLost, _Released):
        raise
    except Exception as exc:
        yield from _fail_poisoned(claimed, exc, env)
        return None


def _fail_poisoned(claimed: Claimed, exc: Exception, env: Env) -> Gen:
    """Something went wrong inside the engine while handling the run: end it now, not retried. If
    even that cannot be written (anything but the database failing), write the bare error type."""
    run = claimed.run
    error = records.error_of(exc, run.current_step_id)
    log.error(
        "run %s (%s) failed in the engine: %s: %s", run.id, run.workflow_id, error.type, error.message,
        exc_info=exc, extra=run_extra(run),
    )  # fmt: skip
    try:
        yield from _commit(env, claimed.lease, Batch(outcome=FailRun(error)), run)
    except (StorageError, _LeaseLost):
        raise
    except Exception as again:
        log.error("run %s: recording its failure failed too (%r); recording the error type only",
                  run.id, again, extra=run_extra(run))  # fmt: skip
        bare = RunError(error.type, "the engine failed while handling this run (see the worker's log)")
        yield from _commit(env, claimed.lease, Batch(outcome=FailRun(bare)), run)


def _segment(claimed: Claimed, env: Env) -> Gen:
    run, lease = claimed.run, claimed.lease
    log.debug("run %s (%s): executing, attempt %d", run.id, run.workflow_id, run.retry_count + 1,
              extra=run_extra(run))  # fmt: skip
    timeout = run_rules.timeout_error(run, env.clock.now())
    if timeout is not None:
        yield from _commit(env, lease, Batch(outcome=FailRun(timeout)), run)
        return None
    if run.held:
        yield from _commit(env, lease, Batch(outcome=ReleaseRun()), run)
        return None
    try:
        replayer = Replayer(env.workflows[run.workflow_id], _replay_input(run, env), claimed.steps)
    except SerializationError as exc:  # the stored input no longer fits the workflow's input schema
        yield from _commit(env, lease, Batch(outcome=FailRun(records.error_of(exc))), run)
        return None
    try:
        return (yield from _drive(replayer, claimed, env))
    finally:
        replayer.close()


def _replay_input(run: RunRow, env: Env) -> ReplayInput:
    return ReplayInput(
        run.id, run.workflow_id, run.resource_id, run.retry_count, run.input, env.min_poll_interval,
        env.supports_transactions,
    )  # fmt: skip


def _drive(replayer: Replayer, claimed: Claimed, env: Env) -> Gen:
    run, lease = claimed.run, claimed.lease
    pending = _Pending()
    while True:
        now = env.clock.now()
        timeout = run_rules.timeout_error(run, now)
        if timeout is not None:
            yield from _commit(env, lease, pending.batch(FailRun(timeout)), run)
            return None
        decision = replayer.decide(now, claimed.mailbox)
        pending.add(decision.writes, decision.consumed, decision.discards)
        action = decision.action
        if not isinstance(action, Execute):
            return (yield from _finish(action, pending, claimed, env))
        if env.stopping():
            yield from _commit(env, lease, pending.batch(ReleaseRun()), run)  # graceful stop: give it back
            return None
        fatal = yield from _execute(action, replayer, pending, claimed, env)
        if fatal is not None:
            yield from _commit(env, lease, pending.batch(FailRun(fatal)), run)
            return None


def _finish(action: Any, pending: _Pending, claimed: Claimed, env: Env) -> Gen:
    run, lease = claimed.run, claimed.lease
    if isinstance(action, Suspend):
        outcome = SuspendRun(action.waiting, action.wake_at, run.mailbox_seq)
        result = yield from _commit(env, lease, pending.batch(outcome), run)
        if result.mailbox_changed:
            return (yield Reload(lease))  # events arrived meanwhile: decide again from scratch
        return None
    if isinstance(action, Complete):
        yield from _commit(env, lease, pending.batch(CompleteRun(action.output)), run)
        return None
    assert isinstance(action, Fail)
    yield from _commit(
        env,
        lease,
        pending.batch(run_rules.after_failure(run, action.error, action.retryable, env.clock.now())),
        run,
    )
    return None


# committing ----------------------------------------------------------------------------------------


def _commit(
    env: Env,
    lease: Lease,
    batch: Batch,
    run: RunRow,
    transaction: tuple[Transaction, StepRecord] | None = None,
) -> Gen:
    faults = env.faults
    outcomes = [s.step_id for s in batch.steps if s.status != "running"] if faults else []
    faults.check_before(outcomes)
    result: CommitResult = yield Commit(lease, env.clock.now(), batch, transaction)
    if result.ok:
        _log_outcome(run, batch.outcome)
        faults.check_after(outcomes)
    return result


def _flush(env: Env, lease: Lease, pending: _Pending, run: RunRow) -> Gen:
    """Write what is pending and keep running; stop when the lease is lost, or when the run was
    paused meanwhile (then give it back). Called right before step code runs, so it also stops when
    the commit took so long (a database outage) that the lease may be running out: the commit left
    at least ``RENEW_BELOW`` of a lease counted from the time taken before it
    (``transitions.renewed_lease``); a step starts only with half a lease left, else another worker
    could claim the run meanwhile, and a step must never run in two places at once (SPEC §3)."""
    asked_at = env.clock.now().timestamp()  # floats: pendulum's interval arithmetic costs ~15 µs a step
    result = yield from _commit(env, lease, pending.batch(KeepRunning()), run)
    pending.clear()
    if not result.ok:
        raise _LeaseLost(run.id)
    took = env.clock.now().timestamp() - asked_at
    if took >= env.lease.total_seconds() * (RENEW_BELOW - 0.5):
        log.warning("run %s: recording a step took %.1f s, leaving less than half its lease; leaving the "
                    "run to a new lease rather than risk running its step twice", run.id, took,
                    extra=run_extra(run))  # fmt: skip
        raise _LeaseLost(run.id)
    if result.held:
        yield from _commit(env, lease, Batch(outcome=ReleaseRun()), run)
        raise _Released(run.id)


# executing steps -----------------------------------------------------------------------------------


def _execute(action: Execute, replayer: Replayer, pending: _Pending, claimed: Claimed, env: Env) -> Gen:
    """Write the steps' running records (with what is pending), run their code, add the outcomes to
    ``pending``. Returns a RunError that fails the run at once, or None."""
    run = claimed.run
    starts = [rec for cmd, rec in action.steps if not isinstance(cmd, Child)]
    if starts:
        pending.add(starts)
        yield from _flush(env, claimed.lease, pending, run)
    outcomes: list[_Outcome] = list((yield from _call_steps(action.steps, run, env)))
    env.faults.check_before([o.record.step_id for o in outcomes])  # crash_before: it ran, unrecorded
    for cmd, rec in action.steps:
        if isinstance(cmd, Transaction):
            outcomes.append((yield from _transaction(cmd, rec, pending, claimed, env)))
        elif isinstance(cmd, Child):
            outcomes.append((yield from _start_child(cmd, rec, pending, run, env)))
    fatal = None
    for outcome in outcomes:
        replayer.record(outcome.record)
        if not outcome.written:
            pending.add([outcome.record])
        _log_step(run, outcome.record)
        fatal = fatal or outcome.fatal
    return fatal


@attrs.frozen
class _Outcome:
    """An executed step's new record; ``fatal`` fails the run at once; ``written``: committed already."""

    record: StepRecord
    fatal: RunError | None = None
    written: bool = False


def _call_steps(steps: Sequence[tuple[Any, StepRecord]], run: RunRow, env: Env) -> Gen:
    """Run the ``Run``/``Poll`` functions of one decision (concurrently, for an ``All``)."""
    called = [(cmd, rec) for cmd, rec in steps if isinstance(cmd, Run | Poll)]
    if not called:
        return []
    results = yield CallSteps(tuple(_call_of(cmd, rec, run) for cmd, rec in called))
    now = env.clock.now()
    outcomes = []
    for (cmd, rec), result in zip(called, results, strict=True):
        if isinstance(cmd, Run):
            error = result.error if isinstance(result, Raised) else None
            value = result.value if isinstance(result, Returned) else None
            outcomes.append(_Outcome(*records.run_outcome(cmd, rec, value, error, now, run.id)))
        else:
            if isinstance(result, Raised):
                log.warning("poll %r of run %s raised (counts as not yet): %r", cmd.step_id, run.id, result.error,
                            extra=run_extra(run, cmd.step_id, rec.attempts))  # fmt: skip
            value = result.value if isinstance(result, Returned) else None
            outcomes.append(_Outcome(*records.poll_outcome(cmd, rec, value, now, run.id)))
    return outcomes


def _call_of(cmd: Run | Poll, rec: StepRecord, run: RunRow) -> Call:
    if isinstance(cmd, Poll):
        return Call(cmd.fn, (), None, f"poll {cmd.step_id!r} of run {run.id}", rec)
    timeout = records.timeout_seconds(cmd.timeout)
    return Call(cmd.fn, cmd.args, timeout, f"step {cmd.step_id!r} of run {run.id}", rec)


def _transaction(cmd: Transaction, rec: StepRecord, pending: _Pending, claimed: Claimed, env: Env) -> Gen:
    run, lease = claimed.run, claimed.lease
    if cmd.step_id in env.faults.before:  # die inside the transaction: its writes roll back
        env.faults.before.discard(cmd.step_id)
        cmd = Transaction(cmd.step_id, _then_crash(cmd.fn, cmd.step_id), *cmd.args)
    try:
        result = yield Commit(lease, env.clock.now(), pending.batch(KeepRunning()), (cmd, rec))
    except StorageError:
        raise  # the database failed, not the step: the run is retried after its lease expires
    except Exception as exc:  # fn raised: its writes were rolled back; record the failure normally
        err = records.error_of(exc, cmd.step_id)
        fatal = err if isinstance(exc, SerializationError) else None
        return _Outcome(records.failed(rec, err, env.clock.now()), fatal)
    if not result.ok:
        raise _LeaseLost(run.id)
    pending.clear()
    record = result.transaction_result
    assert isinstance(record, StepRecord)
    return _Outcome(record, record.error if record.status == "failed" else None, written=True)


def _start_child(cmd: Child, rec: StepRecord, pending: _Pending, run: RunRow, env: Env) -> Gen:
    now = env.clock.now()
    try:
        plan: ChildPlan = yield ResolveChild(cmd.workflow, rec)
        stored_input = plan.target.validate_input(cmd.input)
        timeout_at = add_time(now, plan.timeout, "child timeout") if plan.timeout is not None else None
    except PgflowError as exc:
        return _Outcome(records.failed(rec, records.error_of(exc, cmd.step_id), now))
    child_id = str(uuid.uuid4())
    new = NewRun(child_id, plan.target.id, cmd.resource_id, stored_input, plan.max_retries, plan.retry_backoff,
                 None, timeout_at, now, parent_run_id=run.id, parent_step_id=cmd.step_id,
                 trace_context=plan.trace_context or run.trace_context)  # fmt: skip
    pending.children.append(StartChild(new))
    return _Outcome(records.waiting(rec, output={"child_run_id": child_id}))


def _then_crash(fn: Callable[..., Any], step_id: str) -> Callable[..., Any]:
    """``fn``, then a crash (still inside the step's transaction); ``async def`` stays async."""
    if is_async(fn):

        async def run_then_crash_async(conn: Any, *args: Any) -> Any:
            await fn(conn, *args)
            raise Crash(f"crash_before({step_id!r})")

        return run_then_crash_async

    def run_then_crash(conn: Any, *args: Any) -> Any:
        fn(conn, *args)
        raise Crash(f"crash_before({step_id!r})")

    return run_then_crash


# logging -------------------------------------------------------------------------------------------


def _log_step(run: RunRow, rec: StepRecord) -> None:
    if rec.error is None and not log.isEnabledFor(logging.DEBUG):
        return  # the common case: a step that succeeded, nothing logged (no attributes built)
    extra = run_extra(run, rec.step_id, rec.attempts)
    if rec.status == "waiting" and rec.error is not None:
        log.warning("run %s: step %r failed (attempt %d), retrying at %s: %s: %s", run.id, rec.step_id,
                    rec.attempts, rec.wake_at, rec.error.type, rec.error.message, extra=extra)  # fmt: skip
    elif rec.status == "failed" and rec.error is not None:
        log.warning("run %s: step %r failed after %d attempt(s): %s: %s", run.id, rec.step_id, rec.attempts,
                    rec.error.type, rec.error.message, extra=extra)  # fmt: skip
    else:
        log.debug("run %s: step %r %s", run.id, rec.step_id, rec.status, extra=extra)


def _log_outcome(run: RunRow, outcome: RunOutcome) -> None:
    """What became of the run when the worker let it go: ERROR for a run that failed for good (with
    its traceback), WARNING for an attempt that will be retried, DEBUG for progress."""
    if isinstance(outcome, KeepRunning):
        return
    if isinstance(outcome, FailRun):
        err = outcome.error
        log.error("run %s (%s) failed: %s: %s (step %s)\n%s", run.id, run.workflow_id, err.type, err.message,
                  err.step_id, err.traceback or "(no traceback)", extra=run_extra(run, err.step_id))  # fmt: skip
    elif isinstance(outcome, RetryRun):
        err = outcome.error
        log.warning("run %s (%s): attempt %d failed (%s: %s); retrying at %s", run.id, run.workflow_id,
                    run.retry_count + 1, err.type, err.message, outcome.due_at,
                    extra=run_extra(run, err.step_id))  # fmt: skip
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("run %s: %s", run.id, _describe(outcome), extra=run_extra(run))


def _describe(outcome: RunOutcome) -> str:
    if isinstance(outcome, CompleteRun):
        return "completed"
    if isinstance(outcome, SuspendRun):
        w = outcome.waiting
        return f"waiting at {w.kind} step {w.step_id!r}" if w else f"step retry at {outcome.wake_at}"
    return "released"
