"""``PostgresStore``: the Store protocol on PostgreSQL, blocking (same contract as ``MemoryStore``).

Every operation is written once, in ``ops.py``, as a generator of SQL effects; this class runs them
with the blocking executor of ``sqlgen.py`` on a caller-owned ``psycopg_pool.ConnectionPool``
(``AsyncPostgresStore`` runs the very same generators on the event loop). Each method names the
operation, how it runs (one statement, a pipelined transaction, or the plain transaction a
``Transaction`` step needs) and whether it only reads (then a broken connection is retried once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pendulum
import psycopg
import psycopg_pool

from pgflow.records import Event, StepRecord
from pgflow.schedule_store import FireResult
from pgflow.schedules import ScheduleRow
from pgflow.static_steps import StepInfo, WorkflowInfo
from pgflow.store import Batch, Claimed, CommitResult, Lease, NewRun, PruneQuery, RunQuery, RunRow

from . import migrate as migrations
from . import ops
from . import schedules as schedule_ops
from .core import StoreSettings, commit_route
from .listen import Hub, RunWaiter
from .sqlgen import SyncExecutor

__all__ = ["PostgresStore"]

DateTime = pendulum.DateTime


class PostgresStore:
    """The Store protocol over a caller-owned ``psycopg_pool.ConnectionPool``, in ``schema``."""

    supports_transactions = True

    def __init__(
        self, pool: psycopg_pool.ConnectionPool[Any], schema: str = "pgflow", *, listen_dsn: str | None = None,
        prepare: bool = True,
    ) -> None:  # fmt: skip
        self._pool = pool
        self._settings = StoreSettings(pool, schema, listen_dsn, prepare)
        self.schema = schema
        self._channels = self._settings.channels
        self._q = self._settings.queries  # the named statements the executor runs
        self._x = SyncExecutor(pool, self._settings.queries)
        self._hub = Hub(
            self._listen_connection, self._channels.wake, self._channels.runs, self._probe,
            self._settings.where(),
        )  # fmt: skip

    def _listen_connection(self) -> psycopg.Connection[object]:
        conninfo, kwargs = self._settings.listen_target()
        return psycopg.connect(conninfo, **kwargs)

    def _probe(self, payload: str) -> None:
        """Send a notification on the runs channel through the pool (the LISTEN probe)."""
        self._x.run("listen probe", lambda: ops.notify_runs(self._channels, payload))

    # lifecycle ----------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; two quick reads when up to date)."""
        schema = self.schema
        if self._x.run("migrate", lambda: migrations.missing(schema)):
            self._x.run("migrate", lambda: migrations.apply_missing(schema), mode="user-transaction")

    def close(self) -> None:
        """Close the LISTEN connection; the pool belongs to the caller and stays open."""
        self._hub.close()

    # definitions --------------------------------------------------------------------------------------

    def register_workflow(
        self, workflow_id: str, steps: Sequence[StepInfo], now: DateTime, settings: Mapping[str, Any] | None = None
    ) -> None:  # fmt: skip
        op = lambda: ops.register_workflow(workflow_id, steps, now, settings, self._channels)  # noqa: E731
        self._x.run("register_workflow", op, mode="transaction")

    def workflow_settings(self, workflow_id: str) -> dict[str, Any] | None:
        return self._x.run("workflow_settings", lambda: ops.workflow_settings(workflow_id), read=True)

    def workflow_steps(self, workflow_id: str) -> tuple[StepInfo, ...] | None:
        return self._x.run("workflow_steps", lambda: ops.workflow_steps(workflow_id), read=True)

    # client side --------------------------------------------------------------------------------------

    def start_run(self, new: NewRun) -> tuple[RunRow, bool]:
        return self._x.run("start_run", lambda: ops.start_run(new, self._channels))

    def get(self, run_id: str, resource_id: str | None) -> tuple[RunRow, list[StepRecord]]:
        return self._x.run("get", lambda: ops.get(run_id, resource_id), read=True)

    def list_runs(self, query: RunQuery) -> tuple[list[RunRow], bool, bool]:
        return self._x.run("list_runs", lambda: ops.list_runs(query), read=True)

    def timelines(self, run_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        return self._x.run("timelines", lambda: ops.timelines(run_ids), read=True)

    def deliver_event(
        self, run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime
    ) -> tuple[RunRow, list[StepRecord]] | None:
        at_once = lambda: ops.deliver_event_at_once(run_id, resource_id, event, data, now, self._channels)  # noqa: E731
        done = self._x.run("deliver_event", at_once)
        if done is not None:
            return done
        op = lambda: ops.deliver_event(run_id, resource_id, event, data, now, self._channels)  # noqa: E731
        self._x.run("deliver_event", op, mode="transaction")  # raises the error (no such live run)
        return None

    def change(self, run_id: str, resource_id: str | None, action: str, data: Any, now: DateTime) -> None:
        op = lambda: ops.change(run_id, resource_id, action, data, now, self._channels)  # noqa: E731
        self._x.run("change", op, mode="transaction")

    def retry_run(self, run_id: str, resource_id: str | None, from_step: str | None, now: DateTime) -> RunRow:
        op = lambda: ops.retry_run(run_id, resource_id, from_step, now, self._channels)  # noqa: E731
        return self._x.run("retry_run", op, mode="transaction")

    # worker side --------------------------------------------------------------------------------------

    def claim(
        self, owner: str, workflow_ids: Sequence[str], now: DateTime, lease: pendulum.Duration, limit: int,
        limited: Sequence[str] = (),
    ) -> list[Claimed]:  # fmt: skip
        if not workflow_ids or limit <= 0:
            return []
        if limited:  # a transaction: see ops.claim_limited
            op = lambda: ops.claim_limited(owner, workflow_ids, now, lease, limit, limited, self._channels)  # noqa: E731
            return self._x.run("claim", op, mode="transaction")
        return self._x.run("claim", lambda: ops.claim(owner, workflow_ids, now, lease, limit, self._channels))

    def reload(self, lease: Lease) -> Claimed | None:
        return self._x.run("reload", lambda: ops.reload(lease), read=True)

    def commit(
        self, lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
        transaction: tuple[Any, StepRecord] | None = None,
    ) -> CommitResult:  # fmt: skip
        """Record a batch if the lease is still valid (see ``CommitResult`` and ``core.commit_route``)."""
        route = commit_route(batch, transaction)
        if route == "hot":
            return self._x.run("commit", lambda: ops.commit_keep_running(lease, now, lease_duration, batch))
        if route == "complete":
            done = self._x.run("commit", lambda: ops.commit_complete(lease, now, batch, self._channels))
            if done is not None:
                return done
        op = lambda: ops.commit_locked(lease, now, lease_duration, batch, transaction, self._channels)  # noqa: E731
        return self._x.run("commit", op, mode="transaction" if transaction is None else "user-transaction")

    def heartbeat(
        self, leases: Sequence[Lease], now: DateTime, lease_duration: pendulum.Duration
    ) -> set[str]:
        if not leases:
            return set()
        return self._x.run("heartbeat", lambda: ops.heartbeat(leases, now, lease_duration))

    def next_due(self, workflow_ids: Sequence[str]) -> DateTime | None:
        if not workflow_ids:
            return None
        return self._x.run("next_due", lambda: ops.next_due(workflow_ids), read=True)

    # inspection (the Harness and tests) ------------------------------------------------------------

    def mailbox(self, run_id: str) -> list[Event]:
        """The run's unconsumed events, oldest first (as ``MemoryStore.mailbox``)."""
        return self._x.run("mailbox", lambda: ops.mailbox(run_id), read=True)

    def consumed_events(self, run_id: str) -> dict[int, str]:
        """Consumed event id -> the step that consumed it (as ``MemoryStore.consumed_events``)."""
        return self._x.run("consumed_events", lambda: ops.consumed_events(run_id), read=True)

    # waiting for changes ------------------------------------------------------------------------------

    def listen(self) -> None:
        """Start listening for wake-ups now (so none sent from here on is missed); idempotent. Only a
        worker's store listens on the wake channel: a ``Client``'s only waits for runs."""
        self._hub.start(wake=True)

    def wait_for_wakeup(self, timeout: float) -> bool:
        """Block until work may be claimable (a NOTIFY on this schema's wake channel) or ``timeout``
        seconds pass; True when woken. Without LISTEN (a transaction pooler), only the timeout."""
        return self._hub.wait_wake(timeout)

    def watch_run(self, run_id: str) -> contextlib.AbstractContextManager[RunWaiter]:
        """A waiter for status changes of ``run_id`` on the store's one LISTEN connection: enter it,
        read the run, then ``waiter.wait(timeout)`` in a loop (no change is missed in between)."""
        return self._hub.watch(run_id)

    @property
    def notifications(self) -> bool:
        """Whether notifications arrive now (False while reconnecting, or behind a transaction pooler)."""
        return self._hub.listening

    # reads for the dashboard --------------------------------------------------------------------------

    def count_runs(self, workflow_id: str | None, resource_id: str | None) -> dict[str, int]:
        return self._x.run("count_runs", lambda: ops.count_runs(workflow_id, resource_id), read=True)

    def list_workflows(self) -> list[WorkflowInfo]:
        return self._x.run("list_workflows", ops.list_workflows, read=True)

    def run_mailbox(self, run_id: str, resource_id: str | None) -> list[Event]:
        return self._x.run("run_mailbox", lambda: ops.run_mailbox(run_id, resource_id), read=True)

    def child_runs(self, run_id: str, resource_id: str | None) -> list[RunRow]:
        return self._x.run("child_runs", lambda: ops.child_runs(run_id, resource_id), read=True)

    # retention (SPEC §15) -----------------------------------------------------------------------------

    def prune_runs(self, query: PruneQuery, limit: int, exclusive: bool) -> int | None:
        return self._x.run("prune_runs", lambda: ops.prune_runs(query, limit, exclusive, self.schema))

    def count_prunable(self, query: PruneQuery) -> int:
        return self._x.run("count_prunable", lambda: ops.count_prunable(query), read=True)

    # schedules (SPEC §16): the operations of schedule_store.py as SQL (postgres/schedules.py) -----

    def put_schedule(self, row: ScheduleRow) -> ScheduleRow:
        op = lambda: schedule_ops.put_schedule(row, self._channels)  # noqa: E731
        return self._x.run("put_schedule", op, mode="transaction")

    def get_schedule(self, schedule_id: str) -> ScheduleRow | None:
        return self._x.run("get_schedule", lambda: schedule_ops.get_schedule(schedule_id), read=True)

    def list_schedules(self) -> list[ScheduleRow]:
        return self._x.run("list_schedules", schedule_ops.list_schedules, read=True)

    def set_schedule_paused(self, schedule_id: str, paused: bool, now: DateTime) -> ScheduleRow:
        op = lambda: schedule_ops.set_schedule_paused(schedule_id, paused, now, self._channels)  # noqa: E731
        return self._x.run("set_schedule_paused", op, mode="transaction")

    def delete_schedule(self, schedule_id: str) -> None:
        op = lambda: schedule_ops.delete_schedule(schedule_id, self._channels)  # noqa: E731
        self._x.run("delete_schedule", op, mode="transaction")

    def fire_schedules(self, now: DateTime, on_time: timedelta, limit: int) -> FireResult:
        op = lambda: schedule_ops.fire_schedules(now, on_time, limit, self._channels)  # noqa: E731
        return self._x.run("fire_schedules", op, mode="transaction")

    def next_schedule_tick(self) -> DateTime | None:
        return self._x.run("next_schedule_tick", schedule_ops.next_schedule_tick, read=True)
