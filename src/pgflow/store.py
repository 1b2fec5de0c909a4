"""The storage port: the ``Store`` protocol both stores implement, and the values crossing it.

Stores are dumb about rules: every status change is computed by the pure functions in
``transitions.py`` on a locked :class:`RunRow`, so the in-memory and Postgres stores cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import pendulum

from .records import Event, RunError, RunStatus, StepRecord, Waiting
from .static_steps import StepInfo, WorkflowInfo

if TYPE_CHECKING:  # schedules.py builds on this module
    from .schedule_store import FireResult
    from .schedules import ScheduleRow

__all__ = [
    "Batch",
    "Claimed",
    "CommitResult",
    "Lease",
    "NewRun",
    "PruneQuery",
    "RunQuery",
    "RunRow",
    "RunWaiter",
    "Store",
]

DateTime = pendulum.DateTime


@attrs.frozen
class RunRow:
    """Everything a store keeps about a run besides its steps and mailbox."""

    id: str
    workflow_id: str
    resource_id: str | None
    status: RunStatus
    input: Any
    created_at: DateTime
    updated_at: DateTime
    output: Any = None
    error: RunError | None = None
    current_step_id: str | None = None
    waiting: Waiting | None = None
    wake_at: DateTime | None = None  # public: when it runs next on its own
    due_at: DateTime | None = None  # internal: claimable from this time (None: not on its own)
    held: bool = False
    retry_count: int = 0
    max_retries: int = 0
    retry_backoff: float = 1.0  # seconds
    idempotency_key: str | None = None
    paused_at: DateTime | None = None
    resumed_at: DateTime | None = None
    completed_at: DateTime | None = None
    timeout_at: DateTime | None = None
    lease_owner: str | None = None
    lease_token: int = 0
    lease_expires_at: DateTime | None = None
    mailbox_seq: int = 0  # changes a worker must see before it suspends: events delivered, children ended
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    priority: int = 0  # claimed highest first (SPEC §16)
    concurrency_key: str | None = None
    slot_held: bool = False  # internal: holds a place under its workflow's limits (first claim to end)
    parked: str | None = None  # internal: held back by a limit ("workflow" or "key"), not due until freed
    # the W3C trace context (traceparent, tracestate) current when it was started (pgflow.telemetry)
    trace_context: dict[str, str] | None = None


@attrs.frozen
class NewRun:
    id: str
    workflow_id: str
    resource_id: str | None
    input: Any
    max_retries: int
    retry_backoff: float
    idempotency_key: str | None
    timeout_at: DateTime | None
    now: DateTime
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    priority: int = 0
    concurrency_key: str | None = None
    trace_context: dict[str, str] | None = None


@attrs.frozen
class Lease:
    run_id: str
    owner: str
    token: int


@attrs.frozen
class Claimed:
    run: RunRow
    steps: dict[str, StepRecord]
    mailbox: list[Event]
    lease: Lease
    due: DateTime | None = None  # when the run became claimable (due, or its lease expired): claim delay


# What a worker asks the store to do with a run after recording ``Batch.steps``.
@attrs.frozen
class KeepRunning:
    pass


@attrs.frozen
class SuspendRun:
    waiting: Waiting | None
    wake_at: DateTime | None
    seen_mailbox_seq: int


@attrs.frozen
class CompleteRun:
    output: Any


@attrs.frozen
class FailRun:
    error: RunError


@attrs.frozen
class RetryRun:
    error: RunError
    due_at: DateTime


@attrs.frozen
class ReleaseRun:
    """Give the run back (graceful stop, or claimed while held): ready again at once."""


RunOutcome = KeepRunning | SuspendRun | CompleteRun | FailRun | RetryRun | ReleaseRun


@attrs.frozen
class StartChild:
    """Start a child run in the same transaction as its parent's step record."""

    run: NewRun


@attrs.frozen
class Batch:
    """What a worker writes in one commit: step records (``running`` ones for steps about to start),
    consumed events, the run's outcome, child runs to start, and records to delete (``discards``:
    their consumed events go back to the mailbox)."""

    steps: tuple[StepRecord, ...] = ()
    consumed: tuple[tuple[int, str], ...] = ()
    outcome: RunOutcome = KeepRunning()
    children: tuple[StartChild, ...] = ()
    discards: tuple[str, ...] = ()  # step records to delete first (a retried attempt left their path)

    @property
    def current_step_id(self) -> str | None:
        """The step the run is at after this batch: the first one starting, else the last written."""
        for rec in self.steps:
            if rec.status == "running":
                return rec.step_id
        return self.steps[-1].step_id if self.steps else None

    @property
    def finished_step_id(self) -> str | None:
        """The last step of the batch that is not starting (what a held run stopped after)."""
        done = [rec.step_id for rec in self.steps if rec.status != "running"]
        return done[-1] if done else None


@attrs.frozen
class CommitResult:
    """``ok``: written. ``held``: written, but the run was paused meanwhile (stop working on it).
    ``mailbox_changed``: a suspend was refused because events arrived (reload and decide again).
    Not ok and not mailbox_changed: the lease is lost (expired, taken over, or the run ended)."""

    ok: bool
    held: bool = False
    mailbox_changed: bool = False
    transaction_result: Any = None


@attrs.frozen
class RunQuery:
    resource_id: str | None = None
    workflow_id: str | None = None
    statuses: tuple[str, ...] | None = None
    limit: int = 20
    starting_after: str | None = None
    ending_before: str | None = None


TransactionFn = Any  # a pgflow.commands.Transaction (kept loose: the port does not import commands)


class RunWaiter(Protocol):
    """Waits for a change of one run (from :meth:`Store.watch_run`)."""

    def wait(self, timeout: float) -> bool:
        """True when the run may have changed (re-read it), False after ``timeout`` seconds."""
        ...


class Store(Protocol):
    """Coarse, atomic operations. Every time comes from the caller (``now``)."""

    supports_transactions: bool

    def migrate(self) -> None: ...

    def close(self) -> None: ...

    # waiting for changes
    @property
    def notifications(self) -> bool:
        """Whether changes are announced now (else waiters poll)."""
        ...

    def listen(self) -> None:
        """Start watching for wake-ups now, so none sent from here on is missed."""
        ...

    def wait_for_wakeup(self, timeout: float) -> bool:
        """Block until work may be claimable or ``timeout`` seconds pass; True when woken."""
        ...

    def watch_run(self, run_id: str) -> AbstractContextManager[RunWaiter]:
        """A waiter for changes of ``run_id``: enter it, read the run, then wait in a loop."""
        ...

    # definitions
    def register_workflow(
        self,
        workflow_id: str,
        steps: Sequence[StepInfo],
        now: DateTime,
        settings: Mapping[str, Any] | None = None,
    ) -> None: ...

    def workflow_settings(self, workflow_id: str) -> dict[str, Any] | None: ...

    def workflow_steps(self, workflow_id: str) -> tuple[StepInfo, ...] | None: ...

    # client side
    def start_run(self, new: NewRun) -> tuple[RunRow, bool]: ...

    def get(self, run_id: str, resource_id: str | None) -> tuple[RunRow, list[StepRecord]]: ...

    def list_runs(self, query: RunQuery) -> tuple[list[RunRow], bool, bool]: ...

    def timelines(self, run_ids: Sequence[str]) -> dict[str, list[StepRecord]]: ...

    def deliver_event(
        self, run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime
    ) -> tuple[RunRow, list[StepRecord]] | None:
        """Put the event in the run's mailbox (``transitions.deliver_event``); the run as written and
        its step records (None when the store took a path that does not have them: read them)."""
        ...

    def change(self, run_id: str, resource_id: str | None, action: str, data: Any, now: DateTime) -> None: ...

    # worker side
    def claim(
        self, owner: str, workflow_ids: Sequence[str], now: DateTime, lease: pendulum.Duration, limit: int,
        limited: Sequence[str] = (),
    ) -> list[Claimed]:  # fmt: skip
        """Lease up to ``limit`` claimable runs (``transitions.claim_order``); the runs of the
        ``limited`` workflows (definitions with concurrency limits) under those limits (``limits``)."""
        ...

    def reload(self, lease: Lease) -> Claimed | None: ...

    def commit(
        self, lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
        transaction: tuple[TransactionFn, StepRecord] | None = None,
    ) -> CommitResult: ...  # fmt: skip

    def heartbeat(
        self, leases: Sequence[Lease], now: DateTime, lease_duration: pendulum.Duration
    ) -> set[str]:
        """Extend the leases still held; the ids of live runs whose lease was lost (not ended ones)."""
        ...

    def next_due(self, workflow_ids: Sequence[str]) -> DateTime | None: ...

    # reads for the dashboard (counts, registered workflows, mailbox, child runs) ------------------
    def count_runs(self, workflow_id: str | None, resource_id: str | None) -> dict[str, int]:
        """Runs per status (only statuses that have runs), with the optional filters."""
        ...

    def list_workflows(self) -> list[WorkflowInfo]:
        """Every registered workflow, by id."""
        ...

    def run_mailbox(self, run_id: str, resource_id: str | None) -> list[Event]:
        """The run's unconsumed events, oldest first; ``RunNotFoundError`` as ``get``."""
        ...

    def child_runs(self, run_id: str, resource_id: str | None) -> list[RunRow]:
        """The run's child runs, oldest first (only those of ``resource_id`` when given);
        ``RunNotFoundError`` as ``get``."""
        ...

    # re-driving a failed or cancelled run (SPEC §14) ----------------------------------------------
    def retry_run(self, run_id: str, resource_id: str | None, from_step: str | None, now: DateTime) -> RunRow:
        """Under the run's lock: make it pending again (``transitions.retry``), discard the step records
        ``transitions.records_to_discard`` names as ``transitions.split_discards`` says (deleted, their
        consumed events back in the mailbox; or rewritten as failures of an earlier attempt), cancel
        the live children their Child steps started, and wake a worker. Returns the
        run as written; ``RunNotFoundError`` as ``get``, ``InvalidStateError`` unless it is failed or
        cancelled, ``InvalidArgumentError`` when ``from_step`` has no record (nothing changes then)."""
        ...

    # schedules (SPEC §16): the rules are schedules.py's, the operations schedule_store.py's ---------
    def put_schedule(self, row: ScheduleRow) -> ScheduleRow:
        """Create or replace a schedule as ``schedules.replaced`` says; the row written."""
        ...

    def get_schedule(self, schedule_id: str) -> ScheduleRow | None: ...

    def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, by id."""
        ...

    def set_schedule_paused(self, schedule_id: str, paused: bool, now: DateTime) -> ScheduleRow:
        """Pause or resume (``ScheduleNotFoundError`` when it is missing); the row written."""
        ...

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (``ScheduleNotFoundError`` when it is missing); its runs stay."""
        ...

    def fire_schedules(self, now: DateTime, on_time: timedelta, limit: int) -> FireResult:
        """In one transaction: start the runs of the due ticks of up to ``limit`` due schedules (those
        another transaction holds are skipped) and move their next tick past ``now``."""
        ...

    def next_schedule_tick(self) -> DateTime | None:
        """The earliest next tick of the active schedules (None: none)."""
        ...

    # retention (SPEC §15) -------------------------------------------------------------------------
    def prune_runs(self, query: PruneQuery, limit: int, exclusive: bool) -> int | None:
        """Delete one batch — at most ``limit`` runs, in one transaction — of the runs
        ``query`` selects that can go now (:class:`PruneQuery`), oldest end first, with their steps
        and events; returns how many. ``exclusive``: only while no other store prunes this schema
        (a Postgres advisory lock): None, deleting nothing, when another one does."""
        ...

    def count_prunable(self, query: PruneQuery) -> int:
        """How many runs repeated ``prune_runs`` calls would delete now (a read; ``--dry-run``)."""
        ...


@attrs.frozen
class PruneQuery:
    """Which runs retention deletes: terminal ones with a status in ``statuses`` that ended
    (``completed_at``) before ``cutoff``, of ``workflow_id`` / ``resource_id`` when given. Of those,
    a batch takes a run only when its parent run (if it still exists) has ended too, and when no
    child run of its own is left: children go first, their parent in a later batch, so no run is
    ever left pointing at a deleted parent."""

    cutoff: DateTime
    statuses: tuple[str, ...]
    workflow_id: str | None = None
    resource_id: str | None = None


__all__ += [
    "CompleteRun",
    "FailRun",
    "KeepRunning",
    "ReleaseRun",
    "RetryRun",
    "RunOutcome",
    "StartChild",
    "SuspendRun",
    "TransactionFn",
]
