"""Every run status change, as pure functions on a locked :class:`RunRow`.

Both stores lock the row (a dict entry under a lock, or ``SELECT … FOR UPDATE``), call one of
these, and write back what it returns; the rules of SPEC §3/§4 live here and only here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

import attrs
import pendulum

from .arguments import add_time, clip, shown
from .errors import InvalidArgumentError, InvalidStateError
from .records import TERMINAL, RunError, RunStatus, StepRecord
from .store import (
    Batch,
    CompleteRun,
    FailRun,
    KeepRunning,
    Lease,
    NewRun,
    ReleaseRun,
    RetryRun,
    RunOutcome,
    RunRow,
    SuspendRun,
)

DateTime = pendulum.DateTime
PENDING, RUNNING, PAUSED = RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED


class LeaseLost(Exception):
    """The worker's lease is no longer valid: it must not write anything."""


class MailboxChanged(Exception):
    """Events arrived after the worker loaded the mailbox: reload before suspending."""


def _earliest(*times: DateTime | None) -> DateTime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def new_row(new: NewRun) -> RunRow:
    return RunRow(
        id=new.id, workflow_id=new.workflow_id, resource_id=new.resource_id, status=PENDING,
        input=new.input, created_at=new.now, updated_at=new.now, max_retries=new.max_retries,
        retry_backoff=new.retry_backoff, idempotency_key=new.idempotency_key, timeout_at=new.timeout_at,
        due_at=new.now, parent_run_id=new.parent_run_id, parent_step_id=new.parent_step_id,
        priority=new.priority, concurrency_key=new.concurrency_key,
        trace_context=new.trace_context,
    )  # fmt: skip


def _state_error(row: RunRow, action: str, hint: str = "") -> InvalidStateError:
    held = " and held" if row.held else ""
    return InvalidStateError(
        f"cannot {action} run {row.id} (workflow {row.workflow_id!r}): it is {row.status}{held}{hint}"
    )


def _ensure_live(row: RunRow, action: str) -> None:
    if row.status in TERMINAL:
        raise _state_error(row, action)


# A step's commit renews the run's lease only when less than this share of it is left. Heartbeats
# (every fifth of a lease) keep more than that, so on nearly every step the runs row keeps its indexed
# columns and PostgreSQL rewrites it in place (a HOT update: no new entry in any of its indexes).
RENEW_BELOW = 3 / 4


def renew_margin(lease: timedelta) -> timedelta:
    """How much of a lease must be left for a step's commit to keep it (``RENEW_BELOW`` of it). A
    plain ``timedelta``: the hot commit adds it to a plain datetime (pendulum's arithmetic costs
    ~10 µs a step)."""
    return timedelta(microseconds=round(lease.total_seconds() * 1_000_000 * RENEW_BELOW))


def renew_floor(now: DateTime, lease: pendulum.Duration) -> DateTime:
    """A lease expiring before this is renewed by a step's commit at ``now`` (to ``now + lease``)."""
    return now + renew_margin(lease)


def renewed_lease(expires_at: DateTime | None, now: DateTime, lease: pendulum.Duration) -> DateTime:
    """The lease after a step's commit at ``now``: kept while at least ``RENEW_BELOW`` of it is left."""
    if expires_at is not None and expires_at >= renew_floor(now, lease):
        return expires_at
    return now + lease


def lease_active(row: RunRow, now: DateTime) -> bool:
    return row.lease_owner is not None and row.lease_expires_at is not None and row.lease_expires_at > now


def _settle(row: RunRow, now: DateTime, *, step_done: bool, event_ready: bool = False) -> RunRow:
    """Where a run that nothing holds stands now: running (a worker still has it), ready, or waiting."""
    if row.held:  # nothing moves until resumed; a step that ended meanwhile is no longer waited for
        waiting = None if step_done else row.waiting
        return attrs.evolve(row, status=PAUSED, waiting=waiting, due_at=row.timeout_at, updated_at=now)
    if lease_active(row, now):
        return attrs.evolve(row, status=RUNNING, due_at=None, updated_at=now)
    base = attrs.evolve(row, lease_owner=None, lease_expires_at=None, updated_at=now)
    waiting = None if step_done else row.waiting
    if waiting is not None and not event_ready:
        # the run's own next wake-up (for an All, the earliest of its waits), not only the shown step's
        wake = _earliest(row.wake_at, waiting.wake_at, row.timeout_at)
        if wake is None or wake > now:
            return attrs.evolve(base, status=PAUSED, waiting=waiting, wake_at=wake, due_at=wake)
    if waiting is None and not step_done and row.wake_at is not None and row.wake_at > now:
        return attrs.evolve(base, status=PENDING, due_at=_earliest(row.wake_at, row.timeout_at))  # backoff
    return attrs.evolve(base, status=PENDING, waiting=None, wake_at=None, due_at=now)


# client-side transitions ---------------------------------------------------------------------


def deliver_event(row: RunRow, event: str, now: DateTime) -> RunRow:
    _ensure_live(row, f"deliver event {event!r} to")
    row = attrs.evolve(row, mailbox_seq=row.mailbox_seq + 1, updated_at=now)
    w = row.waiting
    if row.held or row.status != PAUSED or w is None or w.kind != "wait_for" or w.event != event:
        return row
    return _settle(row, now, step_done=False, event_ready=True)


def events_returned(row: RunRow, names: set[str], now: DateTime) -> RunRow:
    """Events a deleted WaitFor record had taken are back in the mailbox: as if delivered again (a
    worker holding the run looks again before it suspends; a run waiting for one wakes up)."""
    if not names:
        return row
    row = attrs.evolve(row, mailbox_seq=row.mailbox_seq + 1, updated_at=now)
    if row.held or row.status != PAUSED or not event_matches(row, names):
        return row
    return _settle(row, now, step_done=False, event_ready=True)


def pause(row: RunRow, now: DateTime) -> RunRow:
    _ensure_live(row, "pause")
    if row.held:
        raise _state_error(row, "pause", " already")
    return attrs.evolve(row, held=True, status=PAUSED, paused_at=now, due_at=row.timeout_at, updated_at=now)


def resume(
    row: RunRow, step: StepRecord | None, event_ready: bool, now: DateTime
) -> tuple[RunRow, StepRecord | None]:
    _ensure_live(row, "resume")
    at_pause = row.waiting is not None and row.waiting.kind == "pause" and not lease_active(row, now)
    if not row.held and not at_pause:
        hint = (
            "; resume_workflow only releases a run held by pause_workflow or waiting at a Pause step — "
            "use trigger_event to deliver an event or fast_forward_workflow to skip a wait"
        )
        raise _state_error(row, "resume", hint)
    done = _complete_step(step, None, now) if at_pause else None
    row = attrs.evolve(row, held=False, resumed_at=now)
    return _settle(row, now, step_done=at_pause, event_ready=event_ready), done


def cancel(row: RunRow, now: DateTime) -> RunRow:
    _ensure_live(row, "cancel")
    return attrs.evolve(
        row, status=RunStatus.CANCELLED, completed_at=now, updated_at=now, due_at=None, wake_at=None,
        lease_owner=None, lease_expires_at=None, held=False, waiting=None,
    )  # fmt: skip


def fast_forward(
    row: RunRow, step: StepRecord | None, data: Any, now: DateTime
) -> tuple[RunRow, StepRecord | None]:
    waiting = row.waiting if row.lease_owner is None else None  # a leased run executes: not waiting
    if row.status in TERMINAL or (waiting is None and not row.held):
        return row, None
    done = None
    if waiting is not None and step is not None and step.status == "waiting":
        output = None if waiting.kind in ("delay", "wait_until", "pause") else ({} if data is None else data)
        done = _complete_step(step, output, now)
    row = attrs.evolve(row, held=False, resumed_at=now if row.held else row.resumed_at)
    return _settle(row, now, step_done=done is not None), done


def _complete_step(step: StepRecord | None, output: Any, now: DateTime) -> StepRecord | None:
    if step is None:
        return None
    return attrs.evolve(step, status="completed", output=output, completed_at=now, wake_at=None)


def child_finished(
    parent: RunRow, step: StepRecord, child: RunRow, now: DateTime
) -> tuple[RunRow, StepRecord]:
    """A child run ended: settle the parent's Child step and wake the parent."""
    from .records import RunError

    if child.status == RunStatus.COMPLETED:
        done = attrs.evolve(step, status="completed", output=child.output, completed_at=now)
    else:
        err = child.error
        detail = f": {err.type}: {err.message}" if err else ""
        msg = f"child run {child.id} (workflow {child.workflow_id!r}) {child.status}{detail}"
        done = attrs.evolve(step, status="failed", error=RunError("ChildFailedError", msg, None, step.step_id),
                            completed_at=now)  # fmt: skip
    if parent.status in TERMINAL:
        return parent, done
    if parent.lease_owner is not None:  # a worker holds the parent: make it look again before it suspends
        return attrs.evolve(parent, mailbox_seq=parent.mailbox_seq + 1, updated_at=now), done
    if parent.waiting is None or parent.waiting.step_id != step.step_id:
        return parent, done
    return _settle(parent, now, step_done=True), done


# worker-side transitions ---------------------------------------------------------------------


def claim(
    row: RunRow, owner: str, now: DateTime, lease: pendulum.Duration, *, limited: bool = False
) -> RunRow:
    """A worker takes the run: running (it no longer waits at a step), or, held, paused as it was
    (the worker gives it back at once). A run of a ``limited`` workflow (one with concurrency limits)
    takes its place from here until it ends; a held one takes none (it is given back at once)."""
    if row.held:
        return attrs.evolve(
            row, status=PAUSED, lease_owner=owner, lease_token=row.lease_token + 1,
            lease_expires_at=now + lease, due_at=None, updated_at=now, parked=None,
        )  # fmt: skip
    return attrs.evolve(
        row, status=RUNNING, lease_owner=owner, lease_token=row.lease_token + 1, lease_expires_at=now + lease,
        due_at=None, updated_at=now, waiting=None, wake_at=None, parked=None,
        slot_held=row.slot_held or limited,
    )  # fmt: skip


def check_lease(row: RunRow, lease: Lease, now: DateTime) -> None:
    if row.lease_token != lease.token or row.lease_owner != lease.owner or row.status in TERMINAL:
        raise LeaseLost(row.id)
    if row.lease_expires_at is None or row.lease_expires_at <= now:
        raise LeaseLost(row.id)


def batch_writes(row: RunRow, batch: Batch) -> tuple[StepRecord, ...]:
    """The records of a batch a locked run takes: a run paused meanwhile starts nothing further,
    so the ``running`` records of steps about to start are dropped (their code will not run)."""
    if not row.held:
        return batch.steps
    return tuple(rec for rec in batch.steps if rec.status != "running")


def apply_batch(row: RunRow, batch: Batch, now: DateTime, lease: pendulum.Duration) -> RunRow:
    """The run after a worker's batch (the lease was checked by the caller): its outcome, and the
    step it is at (the one starting; for a run paused meanwhile, the last one that finished)."""
    step = batch.finished_step_id if row.held else batch.current_step_id
    return apply_outcome(row, batch.outcome, now, lease, step)


def apply_outcome(
    row: RunRow, outcome: RunOutcome, now: DateTime, lease: pendulum.Duration, step: str | None
) -> RunRow:
    """The run after a worker's outcome (the lease was checked by the caller)."""
    row = attrs.evolve(row, updated_at=now, current_step_id=step or row.current_step_id)
    if isinstance(outcome, KeepRunning):
        return attrs.evolve(row, lease_expires_at=renewed_lease(row.lease_expires_at, now, lease))
    released = attrs.evolve(row, lease_owner=None, lease_expires_at=None)
    if isinstance(outcome, SuspendRun):
        if row.mailbox_seq != outcome.seen_mailbox_seq:
            raise MailboxChanged(row.id)
        wake = _earliest(outcome.wake_at, row.timeout_at) if outcome.wake_at else row.timeout_at
        shown_wake = _earliest(outcome.wake_at, row.timeout_at)
        status = PAUSED if (row.held or outcome.waiting is not None) else PENDING
        return attrs.evolve(released, status=status, waiting=outcome.waiting, wake_at=shown_wake,
                            due_at=row.timeout_at if row.held else wake)  # fmt: skip
    if isinstance(outcome, CompleteRun | FailRun):
        ok = isinstance(outcome, CompleteRun)
        return attrs.evolve(
            released, status=RunStatus.COMPLETED if ok else RunStatus.FAILED,
            output=outcome.output if isinstance(outcome, CompleteRun) else None,
            error=None if isinstance(outcome, CompleteRun) else outcome.error,
            completed_at=now, waiting=None, wake_at=None, due_at=None, held=False,
        )  # fmt: skip
    if isinstance(outcome, RetryRun):
        return attrs.evolve(
            released, status=PAUSED if row.held else PENDING, retry_count=row.retry_count + 1,
            error=outcome.error, waiting=None, wake_at=outcome.due_at,
            due_at=row.timeout_at if row.held else _earliest(outcome.due_at, row.timeout_at),
        )  # fmt: skip
    assert isinstance(outcome, ReleaseRun)
    return _settle(attrs.evolve(released), now, step_done=False)


def claim_order(row: RunRow, now: DateTime) -> tuple[int, int, DateTime, DateTime, str]:
    """Which claimable run a worker takes first: runs whose lease expired (a crashed worker's), oldest
    expiry first, before any run that is merely due, so a takeover never waits behind a backlog;
    then the highest priority, then the earliest due. (The claim queries in SQL order the same way.)"""
    if row.lease_owner is not None:
        return (0, 0, row.lease_expires_at or now, row.created_at, row.id)
    return (1, -row.priority, row.due_at or now, row.created_at, row.id)


def is_claimable(row: RunRow, now: DateTime) -> bool:
    if row.status in TERMINAL:
        return False
    if row.status == RUNNING or (row.lease_owner is not None):
        return row.lease_expires_at is not None and row.lease_expires_at <= now
    return row.due_at is not None and row.due_at <= now


CLIENT_ACTIONS = ("pause", "resume", "cancel", "fast_forward")


def apply_change(
    action: str, row: RunRow, step: StepRecord | None, event_ready: bool, data: Any, now: DateTime
) -> tuple[RunRow, StepRecord | None]:
    """One client action (``CLIENT_ACTIONS``) on a locked run; ``step`` is its waiting step's record."""
    if action == "pause":
        return pause(row, now), None
    if action == "resume":
        return resume(row, step, event_ready, now)
    if action == "cancel":
        return cancel(row, now), None
    if action == "fast_forward":
        return fast_forward(row, step, data, now)
    raise ValueError(f"unknown action {action!r}")


def event_matches(row: RunRow, names: set[str]) -> bool:
    """Whether a run waiting at a WaitFor would be woken by one of these buffered event names."""
    w = row.waiting
    return w is not None and w.kind == "wait_for" and w.event in names


def waits_for_child(step: StepRecord, child_id: str) -> bool:
    """Whether a parent's Child step still waits for this very child run. A retried parent may have
    started another child at that step since (SPEC §14): an older child ending must not settle it."""
    if step.status != "waiting" or not isinstance(step.output, dict):
        return False
    return step.output.get("child_run_id") == child_id


# re-driving a failed or cancelled run (SPEC §14) ---------------------------------------------------

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


def retry(row: RunRow, now: DateTime) -> RunRow:
    """A failed or cancelled run made pending again, ready now, as fresh as a new run: no error, no
    retries used, no step shown as current, and its workflow timeout restarted from now."""
    if row.status not in RETRYABLE:
        raise _state_error(row, "retry", "; only a failed or cancelled run can be retried")
    return attrs.evolve(
        row, status=PENDING, error=None, output=None, completed_at=None, retry_count=0, current_step_id=None,
        waiting=None, wake_at=None, due_at=now, held=False, lease_owner=None, lease_expires_at=None,
        timeout_at=renewed_deadline(row, now), updated_at=now,
    )  # fmt: skip


def renewed_deadline(row: RunRow, now: DateTime) -> DateTime | None:
    """The workflow timeout of a retried run: the span it was given at its start, counted from now
    (its old deadline has usually passed: kept, the retried run would time out at once)."""
    if row.timeout_at is None:
        return None
    try:
        return add_time(now, row.timeout_at - row.created_at, "timeout")
    except ValueError:  # InvalidDurationError: past year 9999, so in practice never
        return DateTime.max.replace(tzinfo=pendulum.UTC)


def records_to_discard(row: RunRow, steps: Sequence[StepRecord], from_step: str | None) -> list[str]:
    """The step records a retry discards, in seq order, so their steps execute again (deleted, or
    rewritten: see :func:`split_discards`): every record that is not a final success (failed, and the running or waiting ones a cancel or a timeout cut
    short), except a Child step still waiting for its live child run (the retried run waits for that
    child again instead of starting a second one). With ``from_step``, also that step's record and
    every record with a higher seq (InvalidArgumentError when the step has no record)."""
    cut = _seq_of(row, steps, from_step) if from_step is not None else None
    ordered = sorted(steps, key=lambda rec: rec.seq)
    return [rec.step_id for rec in ordered if (cut is not None and rec.seq >= cut) or not _kept(rec)]


def _kept(rec: StepRecord) -> bool:
    """Whether a retry keeps a record as it is: a completed one, or a Child step waiting for its child."""
    return rec.status == "completed" or (rec.kind == "child" and rec.status == "waiting")


def _seq_of(row: RunRow, steps: Sequence[StepRecord], step_id: str) -> int:
    for rec in steps:
        if rec.step_id == step_id:
            return rec.seq
    reached = clip(", ".join(repr(rec.step_id) for rec in sorted(steps, key=lambda r: r.seq))) or "none"
    raise InvalidArgumentError(
        f"from_step {shown(step_id)}: run {row.id} (workflow {row.workflow_id!r}) has no record of that "
        f"step; name a step it has reached (recorded: {reached})"
    )


EARLIER_ATTEMPT = -1  # a record a retry re-marks counts as failed before the retried run's attempt 0


def split_discards(
    row: RunRow, steps: Sequence[StepRecord], discarded: Sequence[str], now: DateTime
) -> tuple[list[str], list[StepRecord]]:
    """How a retry discards records, so that the replay still follows the recorded order (SPEC §14):
    a discarded record that no kept record follows is deleted (its step is reached afresh, with a
    new seq); one that kept records follow — a failure the workflow caught, a step of an All whose
    other steps completed — is rewritten as a failure of an earlier run attempt instead, which the
    replay retries at its place, replaying the records after it while the workflow follows them
    (exactly as after an automatic run retry). Returns (ids to delete, records to write)."""
    gone = set(discarded)
    last_kept = max((rec.seq for rec in steps if rec.step_id not in gone), default=None)
    ordered = sorted((rec for rec in steps if rec.step_id in gone), key=lambda rec: rec.seq)
    followed = [rec for rec in ordered if last_kept is not None and rec.seq <= last_kept]
    deleted = [rec.step_id for rec in ordered if rec not in followed]
    return deleted, [_failed_earlier(row, rec, now) for rec in followed]


def _failed_earlier(row: RunRow, rec: StepRecord, now: DateTime) -> StepRecord:
    """``rec`` as a failure of an earlier run attempt; a step a cancel or timeout cut short (still
    running or waiting) is described as interrupted."""
    if rec.status == "failed":
        return attrs.evolve(rec, run_attempt=EARLIER_ATTEMPT)
    how = "was cancelled" if row.status == RunStatus.CANCELLED else "failed"
    message = (
        f"step {rec.step_id!r} was still {rec.status} when run {row.id} {how}; a retry executes it again"
    )
    error = RunError("StepInterrupted", message, None, rec.step_id)
    return attrs.evolve(
        rec, status="failed", error=error, completed_at=now, wake_at=None, run_attempt=EARLIER_ATTEMPT
    )


def orphaned_by_retry(child: RunRow, discarded: Collection[str]) -> bool:
    """Whether a live child run was started by a Child step whose record a retry discards: the
    retried parent starts a new child there, so this one is cancelled."""
    return child.parent_step_id in discarded and child.status not in TERMINAL
