"""The locked store operations, written once for every store, over a small unit-of-work seam.

Every status change a client or a worker makes follows one shape: lock the run, apply a pure rule of
``transitions.py``, write back what it returns, and cascade what a terminal status implies (cancel the
live children, settle the parent's ``Child`` step). The operations here are generators that yield
**unit-of-work effects** (lock a run, read a step, write a run, insert an event, notify, …) and get
the answer back; each store performs them its own way — ``MemoryStore`` on dictionaries under its
lock, the Postgres stores as SQL inside one transaction (``postgres/uow.py``), blocking or on the
event loop — so the rules of locking, writing and cascading exist once (DESIGN "locked store
operations written twice"). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, Literal

import attrs
import pendulum

from . import limits
from . import transitions as tr
from .errors import RunNotFoundError
from .records import TERMINAL, RunStatus, StepRecord
from .store import Batch, CommitResult, CompleteRun, FailRun, Lease, RunRow, TransactionFn

__all__ = [
    "ConsumeEvents",
    "DiscardSteps",
    "FreePlace",
    "InsertEvent",
    "InsertRun",
    "LockLiveChildren",
    "LockRun",
    "Notify",
    "ReadStep",
    "RunSteps",
    "RunTransaction",
    "UnconsumedNames",
    "UowEffect",
    "UowGen",
    "WriteRun",
    "WriteSteps",
    "change",
    "commit",
    "deliver_event",
    "not_found_message",
    "retry_run",
    "save",
]

DateTime = pendulum.DateTime


# -- the effects: what an operation asks of the store --------------------------------------------------


@attrs.frozen
class LockRun:
    """The run, locked for the rest of the operation → ``RunRow | None``."""

    run_id: str


@attrs.frozen
class ReadStep:
    """One step record of a run → ``StepRecord | None``."""

    run_id: str
    step_id: str


@attrs.frozen
class RunSteps:
    """Every step record of a run, in ``seq`` order → ``list[StepRecord]``."""

    run_id: str


@attrs.frozen
class UnconsumedNames:
    """The names of a run's unconsumed events → ``set[str]``."""

    run_id: str


@attrs.frozen
class LockLiveChildren:
    """A run's children that have not ended, locked, in id order → ``list[RunRow]``."""

    run_id: str


@attrs.frozen
class WriteRun:
    """Write back every column of a locked run → None."""

    row: RunRow


@attrs.frozen
class WriteSteps:
    """Insert or replace step records of a run (each keeps its ``seq``) → None."""

    run_id: str
    steps: tuple[StepRecord, ...]


@attrs.frozen
class InsertRun:
    """Insert a new run → True, or False when its id or idempotency key exists already."""

    row: RunRow


@attrs.frozen
class InsertEvent:
    """Put an event in a run's mailbox → None."""

    run_id: str
    name: str
    data: Any
    now: DateTime


@attrs.frozen
class ConsumeEvents:
    """Mark mailbox events as taken by the ``WaitFor`` steps that took them → None."""

    run_id: str
    consumed: tuple[tuple[int, str], ...]
    now: DateTime


@attrs.frozen
class DiscardSteps:
    """Delete step records; the events they had taken go back to the mailbox → their names."""

    run_id: str
    step_ids: tuple[str, ...]


@attrs.frozen
class Notify:
    """Tell listeners when the operation commits: ``wake`` (work may be claimable) or ``runs``
    (the run ``payload`` changed status) → None. A store without listeners ignores it."""

    channel: Literal["wake", "runs"]
    payload: str = ""


@attrs.frozen
class FreePlace:
    """A run that held a place under its workflow's limits ended: wake the next parked runs (the best
    of its key, and the best held back by the workflow's limit; ``limits.to_wake``) → None."""

    workflow_id: str
    concurrency_key: str | None
    now: DateTime


@attrs.frozen
class RunTransaction:
    """Run a ``Transaction`` step's function inside the operation's transaction → its completed
    ``StepRecord`` (Postgres only; the function's exception is raised and everything rolls back)."""

    transaction: tuple[TransactionFn, StepRecord]
    now: DateTime


UowEffect = (
    LockRun | ReadStep | RunSteps | UnconsumedNames | LockLiveChildren | WriteRun | WriteSteps | InsertRun
    | InsertEvent | ConsumeEvents | DiscardSteps | Notify | RunTransaction | FreePlace
)  # fmt: skip
UowGen = Generator[UowEffect, Any, Any]


def not_found_message(run_id: str, resource_id: str | None) -> str:
    scope = f" for resource {resource_id!r}" if resource_id is not None else ""
    return f"run {run_id!r} not found{scope}"


# -- writing a run, and what its end implies ------------------------------------------------------------


def lock_scoped(run_id: str, resource_id: str | None) -> UowGen:
    """Lock a run, or raise RunNotFoundError (also when it belongs to another resource)."""
    row: RunRow | None = yield LockRun(run_id)
    if row is None or (resource_id is not None and row.resource_id != resource_id):
        raise RunNotFoundError(not_found_message(run_id, resource_id))
    return row


def save(old: RunRow, new: RunRow, steps: Sequence[StepRecord], now: DateTime) -> UowGen:
    """Write a locked run and its step records; announce what changed; cascade what a terminal
    status implies (its place under the workflow's limits given back, children, parent)."""
    new = limits.settled(new)
    yield WriteRun(new)
    if steps:
        yield WriteSteps(new.id, tuple(steps))
    if new.status != old.status:
        yield Notify("runs", new.id)
    if new.due_at is not None and (new.due_at != old.due_at or new.status != old.status):
        yield Notify("wake")
    if new.status in TERMINAL and old.status not in TERMINAL:
        if old.slot_held:
            yield FreePlace(new.workflow_id, new.concurrency_key, now)
            yield Notify("wake")
        yield from _ended(new, now)


def _ended(row: RunRow, now: DateTime) -> UowGen:
    """A run ended: a cancelled run cancels its live children (recursively, in id order); a child
    settles its parent's waiting ``Child`` step and wakes the parent."""
    if row.status == RunStatus.CANCELLED:
        children: list[RunRow] = yield LockLiveChildren(row.id)
        for child in children:
            yield from save(child, tr.cancel(child, now), [], now)
    if row.parent_run_id is None or row.parent_step_id is None:
        return
    parent: RunRow | None = yield LockRun(row.parent_run_id)
    step: StepRecord | None = yield ReadStep(row.parent_run_id, row.parent_step_id)
    if parent is not None and step is not None and tr.waits_for_child(step, row.id):
        new_parent, done = tr.child_finished(parent, step, row, now)
        yield from save(parent, new_parent, [done], now)


def insert_run(row: RunRow) -> UowGen:
    """Insert a run and wake the workers when it went in. Its status is not announced on the runs
    channel: nobody can be waiting for a run that did not exist (``wait_for_run`` raises
    ``RunNotFoundError`` for it), and each announcement wakes every waiter of that run id."""
    inserted: bool = yield InsertRun(row)
    if inserted:
        yield Notify("wake")
    return inserted


# -- the client's operations -------------------------------------------------------------------------------


def deliver_event(run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime) -> UowGen:
    """Put an event in the run's mailbox; wake the run if it waits for it (SPEC §4)."""
    row = yield from lock_scoped(run_id, resource_id)
    new = tr.deliver_event(row, event, now)
    yield InsertEvent(run_id, event, data, now)
    yield from save(row, new, [], now)


def change(run_id: str, resource_id: str | None, action: str, data: Any, now: DateTime) -> UowGen:
    """pause / resume / cancel / fast_forward a run (``transitions.apply_change``)."""
    row = yield from lock_scoped(run_id, resource_id)
    step = (yield ReadStep(run_id, row.waiting.step_id)) if row.waiting else None
    names: set[str] = yield UnconsumedNames(run_id)
    new, done = tr.apply_change(action, row, step, tr.event_matches(row, names), data, now)
    yield from save(row, new, [done] if done else [], now)


def retry_run(run_id: str, resource_id: str | None, from_step: str | None, now: DateTime) -> UowGen:
    """Re-drive a failed or cancelled run (SPEC §14): pending again, completed records kept, the
    discarded ones deleted (their events back in the mailbox) or rewritten to be retried at their
    place, and the live children of discarded Child steps cancelled. Returns the run."""
    row = yield from lock_scoped(run_id, resource_id)
    new = tr.retry(row, now)
    steps: list[StepRecord] = yield RunSteps(run_id)
    discarded = tr.records_to_discard(row, steps, from_step)
    deleted, rewritten = tr.split_discards(row, steps, discarded, now)
    if deleted:
        yield DiscardSteps(run_id, tuple(deleted))
    yield from save(row, new, rewritten, now)  # notifies: runs (status) and wake (due now)
    if discarded:
        children: list[RunRow] = yield LockLiveChildren(run_id)
        for child in children:
            if tr.orphaned_by_retry(child, discarded):
                yield from save(child, tr.cancel(child, now), [], now)
    return new


# -- the worker's locked commit ---------------------------------------------------------------------------


def commit(
    lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
    transaction: tuple[TransactionFn, StepRecord] | None = None,
) -> UowGen:  # fmt: skip
    """Record a worker's batch if its lease is still valid (see ``CommitResult``): records to discard
    first (their events back in the mailbox), child runs to start, a Transaction step's function,
    consumed events, the step records and the run's new state."""
    row: RunRow | None = yield LockRun(lease.run_id)
    if row is None:
        return CommitResult(ok=False)
    try:
        tr.check_lease(row, lease, now)
        if transaction is not None:
            new = tr.apply_outcome(row, batch.outcome, now, lease_duration, transaction[1].step_id)
        else:
            new = tr.apply_batch(row, batch, now, lease_duration)
    except tr.LeaseLost:
        return CommitResult(ok=False)
    except tr.MailboxChanged:
        return CommitResult(ok=False, mailbox_changed=True)
    steps = list(tr.batch_writes(row, batch))
    record: StepRecord | None = (yield RunTransaction(transaction, now)) if transaction else None
    if record is not None:
        steps.append(record)
    for child in batch.children:
        yield from insert_run(tr.new_row(child.run))
    if batch.discards:
        released: set[str] = yield DiscardSteps(row.id, batch.discards)
        new = tr.events_returned(new, released, now)
    if batch.consumed:
        yield ConsumeEvents(row.id, batch.consumed, now)
    yield from save(row, new, steps, now)
    held = new.held and not isinstance(batch.outcome, CompleteRun | FailRun)
    return CommitResult(ok=True, held=held, transaction_result=record)
