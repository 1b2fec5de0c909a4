"""``MemoryStore``: the in-memory store behind ``Harness()``; same contract as Postgres."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import attrs
import pendulum

from . import limits, locked, schedule_store
from . import transitions as tr
from .arguments import shown
from .errors import IdempotencyConflictError, InvalidArgumentError, RunNotFoundError, StorageError
from .records import TERMINAL, Event, StepRecord
from .schedule_store import FireResult
from .schedules import ScheduleRow
from .static_steps import StepInfo, WorkflowInfo
from .store import (
    Batch,
    Claimed,
    CommitResult,
    Lease,
    NewRun,
    PruneQuery,
    RunQuery,
    RunRow,
    TransactionFn,
)

__all__ = ["MemoryStore"]

DateTime = pendulum.DateTime


class MemoryStore:
    """Thread-safe dictionaries under one lock. ``changed`` is notified on every write."""

    supports_transactions = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._runs: dict[str, RunRow] = {}
        self._steps: dict[str, dict[str, StepRecord]] = {}
        self._mailbox: dict[str, list[tuple[Event, str | None]]] = {}
        self._keys: dict[str, str] = {}
        self._definitions: dict[str, tuple[StepInfo, ...]] = {}
        self._settings: dict[str, dict[str, Any]] = {}
        self._registered_at: dict[str, DateTime] = {}
        self._event_ids = itertools.count(1)
        self._version = 0  # writes so far: waiters compare it
        self._schedules: dict[str, ScheduleRow] = {}

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            yield
            self._version += 1
            self.changed.notify_all()

    # waiting for changes (any write counts) ---------------------------------------------------------

    notifications = True  # every write wakes every waiter

    def listen(self) -> None:
        pass

    def wait_for_wakeup(self, timeout: float) -> bool:
        with self._lock:
            seen = self._version
            self.changed.wait_for(lambda: self._version != seen, max(timeout, 0.0))
            return self._version != seen

    @contextmanager
    def watch_run(self, run_id: str) -> Iterator[_Waiter]:
        with self._lock:
            yield _Waiter(self, self._version)

    def migrate(self) -> None:
        pass

    def close(self) -> None:
        pass

    # definitions --------------------------------------------------------------------------------

    def register_workflow(
        self,
        workflow_id: str,
        steps: Sequence[StepInfo],
        now: DateTime,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        with self._writing():
            before = self._limits(workflow_id) if workflow_id in self._settings else None
            self._definitions[workflow_id] = tuple(steps)
            self._settings[workflow_id] = dict(settings or {})
            self._registered_at[workflow_id] = now
            if limits.rewake(before, self._limits(workflow_id)):
                for row in list(self._runs.values()):
                    if row.workflow_id == workflow_id and row.parked is not None:
                        self._runs[row.id] = attrs.evolve(row, parked=None, due_at=now, updated_at=now)

    def workflow_settings(self, workflow_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._settings.get(workflow_id)
            return dict(found) if found is not None else None

    def workflow_steps(self, workflow_id: str) -> tuple[StepInfo, ...] | None:
        with self._lock:
            return self._definitions.get(workflow_id)

    # client side ---------------------------------------------------------------------------------

    def start_run(self, new: NewRun) -> tuple[RunRow, bool]:
        with self._writing():
            if new.idempotency_key is not None and new.idempotency_key in self._keys:
                existing = self._runs[self._keys[new.idempotency_key]]
                check_idempotent(existing, new)
                return existing, False
            return self._insert(new), True

    def _insert(self, new: NewRun) -> RunRow:
        row = tr.new_row(new)
        self._insert_row(row)
        return row

    def _insert_row(self, row: RunRow) -> bool:
        """Insert a run; False when its id or idempotency key is taken (as Postgres' ON CONFLICT)."""
        if row.id in self._runs or (row.idempotency_key is not None and row.idempotency_key in self._keys):
            return False
        self._runs[row.id] = row
        self._steps[row.id] = {}
        self._mailbox[row.id] = []
        if row.idempotency_key is not None:
            self._keys[row.idempotency_key] = row.id
        return True

    def _row(self, run_id: str, resource_id: str | None) -> RunRow:
        row = self._runs.get(run_id)
        if row is None or (resource_id is not None and row.resource_id != resource_id):
            raise RunNotFoundError(locked.not_found_message(run_id, resource_id))
        return row

    def get(self, run_id: str, resource_id: str | None) -> tuple[RunRow, list[StepRecord]]:
        with self._lock:
            row = self._row(run_id, resource_id)
            return row, self._timeline(run_id)

    def _timeline(self, run_id: str) -> list[StepRecord]:
        """A run's records in their order in the run (seq; ties in write order, as Postgres)."""
        return sorted(self._steps.get(run_id, {}).values(), key=lambda rec: rec.seq)

    def list_runs(self, query: RunQuery) -> tuple[list[RunRow], bool, bool]:
        with self._lock:
            rows = [r for r in self._runs.values() if _matches(r, query)]
            cursor = query.starting_after or query.ending_before
            found = self._runs.get(cursor) if cursor is not None else None
            if cursor is not None and (found is None or not _visible(found, query.resource_id)):
                raise InvalidArgumentError(unknown_cursor(cursor))
            return keyset_page(rows, query, found)

    def timelines(self, run_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        with self._lock:
            return {rid: self._timeline(rid) for rid in run_ids}

    def deliver_event(
        self, run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime
    ) -> tuple[RunRow, list[StepRecord]] | None:
        with self._lock:  # the run as written: no other write in between
            self._locked(locked.deliver_event(run_id, resource_id, event, data, now))
            return self._runs[run_id], self._timeline(run_id)

    def change(self, run_id: str, resource_id: str | None, action: str, data: Any, now: DateTime) -> None:
        self._locked(locked.change(run_id, resource_id, action, data, now))

    # the locked operations of ``pgflow.locked``, on dictionaries ---------------------------------

    def _locked(self, op: locked.UowGen) -> Any:
        """Run a locked operation under the store's lock (one write for the waiters)."""
        return self._drive_writing(op, self._perform)

    def _drive_writing(self, op: Generator[Any, Any, Any], perform: Callable[[Any], Any]) -> Any:
        """Drive an operation's generator to its end under the store's lock, each effect performed
        by ``perform``; its return value (one write for the waiters)."""
        with self._writing():
            answer: Any = None
            while True:
                try:
                    effect = op.send(answer)
                except StopIteration as stop:
                    return stop.value
                answer = perform(effect)

    def _perform(self, effect: locked.UowEffect) -> Any:
        if isinstance(effect, locked.LockRun):
            return self._runs.get(effect.run_id)
        if isinstance(effect, locked.ReadStep):
            return self._steps.get(effect.run_id, {}).get(effect.step_id)
        if isinstance(effect, locked.RunSteps):
            return self._timeline(effect.run_id)
        if isinstance(effect, locked.UnconsumedNames):
            return {ev.name for ev, used in self._mailbox[effect.run_id] if used is None}
        if isinstance(effect, locked.LockLiveChildren):
            live = [
                r
                for r in self._runs.values()
                if r.parent_run_id == effect.run_id and r.status not in TERMINAL
            ]
            return sorted(live, key=lambda r: r.id)  # id order, as Postgres locks them
        if isinstance(effect, locked.WriteRun):
            self._runs[effect.row.id] = effect.row
        elif isinstance(effect, locked.WriteSteps):
            self._steps[effect.run_id].update((rec.step_id, rec) for rec in effect.steps)
        elif isinstance(effect, locked.InsertRun):
            return self._insert_row(effect.row)
        elif isinstance(effect, locked.InsertEvent):
            ev = Event(next(self._event_ids), effect.name, effect.data, effect.now)
            self._mailbox[effect.run_id].append((ev, None))
        elif isinstance(effect, locked.ConsumeEvents):
            self._consume(effect.run_id, effect.consumed)
        elif isinstance(effect, locked.DiscardSteps):
            return self._discard(effect.run_id, effect.step_ids)
        elif isinstance(effect, locked.FreePlace):
            parked = [r for r in self._runs.values() if r.parked is not None]
            for row in limits.to_wake(parked, effect.workflow_id, effect.concurrency_key):
                self._runs[row.id] = attrs.evolve(row, parked=None, due_at=effect.now, updated_at=effect.now)
        elif isinstance(effect, locked.RunTransaction):
            raise StorageError("the memory store cannot run Transaction steps (no database)")
        return None  # Notify: every write wakes every waiter anyway

    # worker side ----------------------------------------------------------------------------------

    def claim(
        self, owner: str, workflow_ids: Sequence[str], now: DateTime, lease: pendulum.Duration, limit: int,
        limited: Sequence[str] = (),
    ) -> list[Claimed]:  # fmt: skip
        wanted = set(workflow_ids)
        with self._writing():
            ready = [r for r in self._runs.values() if r.workflow_id in wanted and tr.is_claimable(r, now)]
            ready.sort(key=lambda r: tr.claim_order(r, now))
            found = {wid: self._limits(wid) for wid in set(limited) & wanted}
            found = {wid: lim for wid, lim in found.items() if lim}
            if found:  # as the limited claim in SQL: candidates, admission, parking
                expired = [r for r in ready if r.lease_owner is not None][:limit]
                due = [r for r in ready if r.lease_owner is None][: limit + limits.EXTRA_CANDIDATES]
                used = limits.in_use(r for r in self._runs.values() if r.workflow_id in found)
                chosen, parked = limits.admit(expired + due, used, found, limit, now)
                for run_id, why in parked.items():  # due again at its timeout (limits)
                    row = self._runs[run_id]
                    self._runs[run_id] = attrs.evolve(row, parked=why, due_at=row.timeout_at, updated_at=now)
            else:
                chosen = ready[:limit]
            claimed = []
            for row in chosen:
                claim_due = _due_time(row)  # what the claim query returns as claim_due
                row = tr.claim(row, owner, now, lease, limited=limits.takes_place(row, found, now))
                self._runs[row.id] = row
                claimed.append(self._claimed(row, claim_due))
            return claimed

    def _limits(self, workflow_id: str) -> limits.Limits:
        settings = self._settings.get(workflow_id, {})
        return limits.Limits(settings.get("concurrency"), settings.get("key_concurrency"))

    def _claimed(self, row: RunRow, due: DateTime | None = None) -> Claimed:
        mailbox = [ev for ev, used in self._mailbox[row.id] if used is None]
        steps = {rec.step_id: rec for rec in self._timeline(row.id)}
        return Claimed(row, steps, mailbox, Lease(row.id, row.lease_owner or "", row.lease_token), due)

    def reload(self, lease: Lease) -> Claimed | None:
        with self._lock:
            row = self._runs.get(lease.run_id)
            if row is None or row.lease_token != lease.token or row.status in TERMINAL:
                return None
            return self._claimed(row)

    def commit(
        self, lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
        transaction: tuple[TransactionFn, StepRecord] | None = None,
    ) -> CommitResult:  # fmt: skip
        result: CommitResult = self._locked(locked.commit(lease, now, lease_duration, batch, transaction))
        return result

    def _discard(self, run_id: str, step_ids: Sequence[str]) -> set[str]:
        """Delete these step records; the events they had taken go back to the mailbox (their names)."""
        if not step_ids:
            return set()
        gone = set(step_ids)
        for sid in gone:
            self._steps[run_id].pop(sid, None)
        box = self._mailbox[run_id]
        self._mailbox[run_id] = [(ev, None if used in gone else used) for ev, used in box]
        return {ev.name for ev, used in box if used in gone}

    def _consume(self, run_id: str, consumed: Sequence[tuple[int, str]]) -> None:
        taken = dict(consumed)
        box = self._mailbox[run_id]
        self._mailbox[run_id] = [(ev, taken.get(ev.id, used)) for ev, used in box]

    def heartbeat(
        self, leases: Sequence[Lease], now: DateTime, lease_duration: pendulum.Duration
    ) -> set[str]:
        lost = set()
        with self._lock:
            for lease in leases:
                row = self._runs[lease.run_id]
                try:
                    tr.check_lease(row, lease, now)
                except tr.LeaseLost:
                    if row.status not in TERMINAL:  # a run that ended meanwhile lost nothing
                        lost.add(lease.run_id)
                    continue
                self._runs[row.id] = attrs.evolve(row, lease_expires_at=now + lease_duration)
        return lost

    def next_due(self, workflow_ids: Sequence[str]) -> DateTime | None:
        wanted = set(workflow_ids)
        with self._lock:
            times = [
                _due_time(r)
                for r in self._runs.values()
                if r.workflow_id in wanted and r.status not in TERMINAL
            ]
            present = [t for t in times if t is not None]
            return min(present) if present else None

    # harness helpers ----------------------------------------------------------------------------------

    def mailbox(self, run_id: str) -> list[Event]:
        with self._lock:
            return [ev for ev, used in self._mailbox[run_id] if used is None]

    def consumed_events(self, run_id: str) -> dict[int, str]:
        with self._lock:
            return {ev.id: used for ev, used in self._mailbox[run_id] if used is not None}

    # reads for the dashboard ------------------------------------------------------------------------

    def count_runs(self, workflow_id: str | None, resource_id: str | None) -> dict[str, int]:
        query = RunQuery(resource_id=resource_id, workflow_id=workflow_id)
        with self._lock:
            return dict(Counter(r.status.value for r in self._runs.values() if _matches(r, query)))

    def list_workflows(self) -> list[WorkflowInfo]:
        with self._lock:
            return [
                WorkflowInfo(wid, steps, self._registered_at[wid])
                for wid, steps in sorted(self._definitions.items())
            ]

    def run_mailbox(self, run_id: str, resource_id: str | None) -> list[Event]:
        with self._lock:
            self._row(run_id, resource_id)
            return self.mailbox(run_id)

    def child_runs(self, run_id: str, resource_id: str | None) -> list[RunRow]:
        with self._lock:
            self._row(run_id, resource_id)
            children = [
                r for r in self._runs.values()
                if r.parent_run_id == run_id and (resource_id is None or r.resource_id == resource_id)
            ]  # fmt: skip
            return sorted(children, key=lambda r: (r.created_at, r.id))

    # re-driving a failed or cancelled run (SPEC §14) ---------------------------------------------

    def retry_run(self, run_id: str, resource_id: str | None, from_step: str | None, now: DateTime) -> RunRow:
        row: RunRow = self._locked(locked.retry_run(run_id, resource_id, from_step, now))
        return row

    # retention (SPEC §15): the rules of ``prune_batch`` / ``prunable_count``, as the SQL's -------------

    def prune_runs(self, query: PruneQuery, limit: int, exclusive: bool) -> int | None:
        """One batch under the store's lock (``exclusive`` holds trivially: one lock for everything)."""
        with self._writing():
            doomed = prune_batch(self._runs, query, limit)
            for run_id in doomed:
                row = self._runs.pop(run_id)
                del self._steps[run_id], self._mailbox[run_id]
                if row.idempotency_key is not None:
                    self._keys.pop(row.idempotency_key, None)  # freed, as the unique index's entry
            return len(doomed)

    def count_prunable(self, query: PruneQuery) -> int:
        with self._lock:
            return prunable_count(self._runs, query)

    # schedules (SPEC §16): the operations of schedule_store.py, on a dictionary -------------------

    def put_schedule(self, row: ScheduleRow) -> ScheduleRow:
        written: ScheduleRow = self._schedule_op(schedule_store.put(row))
        return written

    def get_schedule(self, schedule_id: str) -> ScheduleRow | None:
        with self._lock:
            return self._schedules.get(schedule_id)

    def list_schedules(self) -> list[ScheduleRow]:
        with self._lock:
            return [self._schedules[sid] for sid in sorted(self._schedules)]

    def set_schedule_paused(self, schedule_id: str, paused: bool, now: DateTime) -> ScheduleRow:
        written: ScheduleRow = self._schedule_op(schedule_store.set_paused(schedule_id, paused, now))
        return written

    def delete_schedule(self, schedule_id: str) -> None:
        self._schedule_op(schedule_store.delete(schedule_id))

    def fire_schedules(self, now: DateTime, on_time: timedelta, limit: int) -> FireResult:
        fired: FireResult = self._schedule_op(schedule_store.fire_due(now, on_time, limit, _new_id))
        return fired

    def next_schedule_tick(self) -> DateTime | None:
        with self._lock:
            ticks = [r.next_tick_at for r in self._schedules.values() if r.next_tick_at is not None]
            return min(ticks, default=None)

    def _schedule_op(self, op: schedule_store.ScheduleGen) -> Any:
        """Run a schedule operation under the store's lock (one write for the waiters)."""
        return self._drive_writing(op, self._perform_schedule)

    def _perform_schedule(self, effect: schedule_store.ScheduleEffect) -> Any:
        if isinstance(effect, schedule_store.LockSchedule):
            return self._schedules.get(effect.schedule_id)
        if isinstance(effect, schedule_store.LockDueSchedules):
            due = [
                r
                for r in self._schedules.values()
                if r.next_tick_at is not None and r.next_tick_at <= effect.now
            ]
            due.sort(key=lambda r: (r.next_tick_at, r.schedule_id))
            return [(r, self.workflow_settings(r.workflow_id)) for r in due[: effect.limit]]
        if isinstance(effect, schedule_store.RunsByKeys):
            return {key: self._keys[key] for key in effect.keys if key in self._keys}
        if isinstance(effect, schedule_store.NextTick):
            return self.next_schedule_tick()
        if isinstance(effect, schedule_store.WriteSchedule):
            self._schedules[effect.row.schedule_id] = effect.row
        elif isinstance(effect, schedule_store.DeleteSchedule):
            self._schedules.pop(effect.schedule_id, None)
        elif isinstance(effect, schedule_store.AddRun):
            self._insert_row(effect.row)
        return None  # Notify: every write wakes every waiter anyway


def _new_id() -> str:
    """A tick run's id (as ``postgres/schedules.py``'s; tests give both stores the same ids here)."""
    return str(uuid.uuid4())


class _Waiter:
    """Waits for any write to the store after the last one it saw (the memory store has no channels)."""

    def __init__(self, store: MemoryStore, seen: int) -> None:
        self._store = store
        self._seen = seen

    def wait(self, timeout: float) -> bool:
        store = self._store
        with store._lock:
            store.changed.wait_for(lambda: store._version != self._seen, max(timeout, 0.0))
            changed = store._version != self._seen
            self._seen = store._version
            return changed


def _due_time(row: RunRow) -> DateTime | None:
    if row.lease_owner is not None:
        return row.lease_expires_at
    return row.due_at


def _visible(row: RunRow, resource_id: str | None) -> bool:
    """A run is visible to a caller naming ``resource_id`` only if it belongs to that resource."""
    return resource_id is None or row.resource_id == resource_id


def unknown_cursor(cursor: str) -> str:
    """The message for a cursor that names no run the caller can see (missing, or another tenant's)."""
    return f"unknown cursor {shown(cursor)}: pass a run id from a previous page"


def _matches(row: RunRow, q: RunQuery) -> bool:
    if not _visible(row, q.resource_id):
        return False
    if q.workflow_id is not None and row.workflow_id != q.workflow_id:
        return False
    return q.statuses is None or row.status.value in q.statuses


def keyset_page(rows: list[RunRow], q: RunQuery, cursor: RunRow | None) -> tuple[list[RunRow], bool, bool]:
    """Newest first by (created_at, id); the same rule as the SQL in the Postgres store."""
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    if cursor is not None and q.starting_after:
        key = (cursor.created_at, cursor.id)
        older = [r for r in rows if (r.created_at, r.id) < key]
        return older[: q.limit], len(older) > q.limit, True
    if cursor is not None and q.ending_before:
        key = (cursor.created_at, cursor.id)
        newer = [r for r in rows if (r.created_at, r.id) > key]
        page = newer[-q.limit :]
        return page, True, len(newer) > q.limit
    return rows[: q.limit], len(rows) > q.limit, False


def ends_before(row: RunRow, query: PruneQuery) -> bool:
    """Whether retention selects the run by itself: terminal, one of ``query.statuses``, ended
    before the cutoff, of the workflow and resource asked for (the ``WHERE`` of ``prune_runs``)."""
    return (
        row.status in TERMINAL and row.status.value in query.statuses
        and row.completed_at is not None and row.completed_at < query.cutoff
        and query.workflow_id in (None, row.workflow_id) and query.resource_id in (None, row.resource_id)
    )  # fmt: skip


def _parent_live(row: RunRow, runs: Mapping[str, RunRow]) -> bool:
    parent = runs.get(row.parent_run_id) if row.parent_run_id is not None else None
    return parent is not None and parent.status not in TERMINAL


def prune_batch(runs: Mapping[str, RunRow], query: PruneQuery, limit: int) -> list[str]:
    """The next batch of retention, oldest end first: runs it selects whose parent (if any is left)
    has ended and that have no child run left (children go first, their parent in a later batch)."""
    parents = {r.parent_run_id for r in runs.values() if r.parent_run_id is not None}
    doomed = [
        r for r in runs.values()
        if ends_before(r, query) and not _parent_live(r, runs) and r.id not in parents
    ]  # fmt: skip
    doomed.sort(key=lambda r: (r.completed_at, r.id))
    return [r.id for r in doomed[:limit]]


def prunable_count(runs: Mapping[str, RunRow], query: PruneQuery) -> int:
    """How many runs batch after batch of ``prune_batch`` deletes: those it selects whose parent has
    not ended is kept, and so is every ancestor of a kept run (the SQL's recursive ``kept``)."""
    kept: set[str] = set()
    for row in runs.values():
        at = row
        if ends_before(at, query):
            continue
        while at.parent_run_id is not None and at.parent_run_id not in kept:
            kept.add(at.parent_run_id)
            parent = runs.get(at.parent_run_id)
            if parent is None:
                break
            at = parent
    return sum(
        1 for r in runs.values() if ends_before(r, query) and not _parent_live(r, runs) and r.id not in kept
    )


def check_idempotent(existing: RunRow, new: NewRun) -> None:
    if existing.workflow_id != new.workflow_id or existing.resource_id != new.resource_id:
        raise IdempotencyConflictError(
            f"idempotency key {new.idempotency_key!r} is already used by a run of another workflow or "
            f"resource (requested workflow {new.workflow_id!r})"
        )
