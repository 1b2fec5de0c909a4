"""``PostgresStore``: the Store protocol on PostgreSQL (same contract as ``MemoryStore``).

Every status change locks the run row (``SELECT … FOR UPDATE``), applies a pure function of
``transitions.py`` and writes the result back, except on the hot path, where each operation is one
statement (one round trip): starting a run, claiming runs (as ``transitions.claim``), a batch of
step records that keeps the run running (fenced by the lease), and the completion of a run without
a parent (as ``apply_outcome`` for ``CompleteRun``). psycopg errors become :class:`StorageError` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import pendulum
import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from pgflow import serde
from pgflow import transitions as tr
from pgflow.errors import RunNotFoundError, SerializationError, StorageError
from pgflow.memory import check_idempotent, not_found_message
from pgflow.records import TERMINAL, Event, StepRecord
from pgflow.static_steps import StepInfo, WorkflowInfo
from pgflow.store import (
    Batch,
    Claimed,
    CommitResult,
    CompleteRun,
    FailRun,
    KeepRunning,
    Lease,
    NewRun,
    RunQuery,
    RunRow,
)  # fmt: skip

from . import migrate as migrations
from .listen import Hub, RunWaiter, channel
from .paging import count_runs, list_runs
from .queries import Queries
from .rows import event_from, json_value, jsonb, pg_time, run_from, run_params, step_from, steps_json
from .tx import Channels, Tx, UserCodeError, pipelined_transaction, read_together, run_transaction_step

__all__ = ["PostgresStore"]

T = TypeVar("T")
DateTime = pendulum.DateTime
Conn = psycopg.Connection[Any]
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# SQLSTATE class 22 (data exception; psycopg also raises DataError itself, e.g. for a NUL in a text
# parameter) and class 54 (a value over a program limit, e.g. a too deeply nested jsonb)
_REFUSED_VALUES = (psycopg.DataError, pg_errors.ProgramLimitExceeded)
_ATTEMPTS = 3


class PostgresStore:
    """The Store protocol over a caller-owned ``psycopg_pool.ConnectionPool``, in ``schema``."""

    supports_transactions = True

    def __init__(
        self, pool: psycopg_pool.ConnectionPool[Any], schema: str = "pgflow", *, listen_dsn: str | None = None,
        prepare: bool = True,
    ) -> None:  # fmt: skip
        self._pool = pool
        self.schema = schema
        self._q = Queries(schema)
        self._channels = Channels(channel("wake", schema), channel("runs", schema))
        self._listen_dsn = listen_dsn
        self._prepare = prepare
        self._hub = Hub(
            self._listen_connection, self._channels.wake, self._channels.runs, self._probe, self._where()
        )

    # plumbing ---------------------------------------------------------------------------------------

    def _run(self, op: str, fn: Callable[[Conn], T], *, autocommit: bool = False, read: bool = False) -> T:
        """``fn`` on a pooled connection; deadlocks are retried, psycopg errors become StorageError.
        A ``read`` that fails on a broken connection (a server restart, a failover) is retried once, on
        another connection: writing twice could double an effect, reading twice cannot."""
        failure: BaseException | None = None
        retried_read = not read
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:
                    if not autocommit or conn.autocommit:  # nothing to switch (the usual case)
                        return fn(conn)
                    with _mode(conn, autocommit):
                        return fn(conn)
            except psycopg.OperationalError as exc:
                if retried_read or isinstance(exc, PoolTimeout):
                    raise StorageError(f"{op} failed on schema {self.schema!r}: {exc}") from exc
                retried_read = True
            except _RETRYABLE as exc:
                if attempt == _ATTEMPTS:
                    raise StorageError(
                        f"{op} failed on schema {self.schema!r} after {attempt} attempts: {exc}"
                    ) from exc
            except UserCodeError as exc:
                failure = exc.original
                break
            except _REFUSED_VALUES as exc:  # bad data, not a failing database: retrying cannot help
                raise SerializationError(
                    f"{op} on schema {self.schema!r}: PostgreSQL cannot store a value: {exc}"
                ) from exc
            except psycopg.Error as exc:
                raise StorageError(f"{op} failed on schema {self.schema!r}: {exc}") from exc
        assert failure is not None
        raise failure

    def _transaction(self, op: str, body: Callable[[Tx], T], *, pipeline: bool = True) -> T:
        """``body`` inside one transaction. Pipelined (the default), BEGIN travels with the first
        query and the writes with COMMIT: two round trips when ``body`` reads once, then writes."""

        def run(conn: Conn) -> T:
            with pipelined_transaction(conn) if pipeline else conn.transaction():
                tx = Tx(conn, self._q, self._channels)
                result = body(tx)
                tx.flush()
                return result

        return self._run(op, run, autocommit=pipeline)

    def _query(self, op: str, name: str, *, read: bool = False, **params: Any) -> list[dict[str, Any]]:
        """One autocommit statement (one round trip); ``read``: it writes nothing (retried once on a
        broken connection)."""

        def run(conn: Conn) -> list[dict[str, Any]]:
            return conn.cursor(row_factory=dict_row).execute(self._q[name], params).fetchall()

        return self._run(op, run, autocommit=True, read=read)

    def _listen_connection(self) -> psycopg.Connection[object]:
        """A connection of its own (not from the pool) for LISTEN: to ``listen_dsn`` when given (a
        direct connection past a transaction-pooling PgBouncer), else like the pool's."""
        given: dict[str, Any] | None = {}
        if self._listen_dsn is not None:
            conninfo = self._listen_dsn
        else:
            conninfo = self._pool.conninfo() if callable(self._pool.conninfo) else self._pool.conninfo
            given = self._pool.kwargs() if callable(self._pool.kwargs) else self._pool.kwargs
        kwargs = {k: v for k, v in (given or {}).items() if k != "autocommit"}
        if not self._prepare:
            kwargs["prepare_threshold"] = None
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10, **kwargs)

    def _probe(self, payload: str) -> None:
        """Send a notification on the runs channel through the pool (the LISTEN probe)."""
        self._query("listen probe", "notify", channels=[self._channels.runs], payloads=[payload])

    def _where(self) -> str:
        """The database and schema, for log lines (no password)."""
        conninfo = self._listen_dsn or (
            self._pool.conninfo() if callable(self._pool.conninfo) else self._pool.conninfo
        )
        try:
            parts = conninfo_to_dict(conninfo)
        except psycopg.Error:
            parts = {}
        where = f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"
        return f"{where} (schema {self.schema!r})"

    # lifecycle ----------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent; two quick reads when up to date)."""
        self._run("migrate", lambda conn: migrations.migrate(conn, self.schema), autocommit=True)

    def close(self) -> None:
        """Close the LISTEN connection; the pool belongs to the caller and stays open."""
        self._hub.close()

    # definitions --------------------------------------------------------------------------------------

    def register_workflow(
        self,
        workflow_id: str,
        steps: Sequence[StepInfo],
        now: DateTime,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        data = serde.converter.unstructure(list(steps), list[StepInfo])
        params = {
            "id": workflow_id,
            "steps": jsonb(data),
            "settings": jsonb(dict(settings or {})),
            "now": now,
        }
        self._run(
            "register_workflow",
            lambda conn: conn.execute(self._q["register_workflow"], params),
            autocommit=True,
        )

    def workflow_settings(self, workflow_id: str) -> dict[str, Any] | None:
        found = self._query("workflow_settings", "workflow_settings", read=True, id=workflow_id)
        return dict(found[0]["settings"]) if found else None

    def workflow_steps(self, workflow_id: str) -> tuple[StepInfo, ...] | None:
        found = self._query("workflow_steps", "workflow_steps", read=True, id=workflow_id)
        if not found:
            return None
        return tuple(serde.converter.structure(found[0]["steps"], list[StepInfo]))

    # client side --------------------------------------------------------------------------------------

    def start_run(self, new: NewRun) -> tuple[RunRow, bool]:
        """One statement (one round trip) inserts the run and wakes the workers; when its id or
        idempotency key exists already, a second read returns the existing run."""
        row = tr.new_row(new)
        params = {**run_params(row), "wake_channel": self._channels.wake, "runs_channel": self._channels.runs}
        if self._query("start_run", "start_run", **params):
            return row, True
        if new.idempotency_key is not None:
            found = self._query("start_run", "run_by_key", read=True, key=new.idempotency_key)
        else:
            found = self._query("start_run", "get_run", read=True, id=new.id)
        if not found:
            raise StorageError(f"run {new.id} could not be inserted and no conflicting run was found")
        existing = run_from(found[0])
        check_idempotent(existing, new)
        return existing, False

    def get(self, run_id: str, resource_id: str | None) -> tuple[RunRow, list[StepRecord]]:
        def run(conn: Conn) -> tuple[RunRow, list[StepRecord]]:
            found, records = read_together(
                conn, self._q, ("get_run", {"id": run_id}), ("run_steps", {"run_id": run_id})
            )
            row = run_from(found[0]) if found else None
            if row is None or (resource_id is not None and row.resource_id != resource_id):
                raise RunNotFoundError(not_found_message(run_id, resource_id))
            return row, [step_from(r) for r in records]

        return self._run("get", run, autocommit=True, read=True)

    def list_runs(self, query: RunQuery) -> tuple[list[RunRow], bool, bool]:
        return self._run(
            "list_runs", lambda conn: list_runs(conn, self._q, query), autocommit=True, read=True
        )

    def timelines(self, run_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {rid: [] for rid in run_ids}
        if run_ids:
            for r in self._query("timelines", "steps_of_runs", read=True, run_ids=list(run_ids)):
                found[r["run_id"]].append(step_from(r))
        return found

    def deliver_event(
        self, run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime
    ) -> None:
        def body(tx: Tx) -> None:
            row = tx.lock_scoped(run_id, resource_id)
            new = tr.deliver_event(row, event, now)
            tx.conn.execute(
                self._q["insert_event"],
                {"run_id": run_id, "name": event, "data": json_value(data), "now": now},
            )
            tx.save(row, new, [], now)

        self._transaction("deliver_event", body)

    def change(self, run_id: str, resource_id: str | None, action: str, data: Any, now: DateTime) -> None:
        def body(tx: Tx) -> None:
            row = tx.lock_scoped(run_id, resource_id)
            step = tx.step(run_id, row.waiting.step_id) if row.waiting else None
            names = {r["name"] for r in tx.rows("unconsumed_names", run_id=run_id)}
            new, done = tr.apply_change(action, row, step, tr.event_matches(row, names), data, now)
            tx.save(row, new, [done] if done else [], now)

        self._transaction("change", body)

    # worker side --------------------------------------------------------------------------------------

    def claim(
        self, owner: str, workflow_ids: Sequence[str], now: DateTime, lease: pendulum.Duration, limit: int
    ) -> list[Claimed]:
        if not workflow_ids or limit <= 0:
            return []
        return self._run(
            "claim",
            lambda conn: self._claim(conn, owner, list(workflow_ids), now, lease, limit),
            autocommit=True,
        )

    def _claim(
        self,
        conn: Conn,
        owner: str,
        workflow_ids: list[str],
        now: DateTime,
        lease: pendulum.Duration,
        limit: int,
    ) -> list[Claimed]:
        """One statement, one round trip (autocommit): lease the claimable runs and load their step
        records and mailboxes (see the ``claim`` query). A run a client changed while the statement
        ran (an event delivered, a wait fast-forwarded) has its steps and mailbox read again, after
        the lease committed: the snapshot's copy may lack what its ``mailbox_seq`` already counts."""
        params = {
            "workflow_ids": workflow_ids, "now": pg_time(now), "limit": limit, "owner": owner,
            "lease_expires_at": pg_time(now + lease),
        }  # fmt: skip
        found = conn.cursor(row_factory=dict_row).execute(self._q["claim"], params).fetchall()
        stale = [r["id"] for r in found if not r["snapshot_current"]]
        if stale:  # changed between the statement's snapshot and its row lock: read them again
            steps, mail = read_together(
                conn, self._q, ("steps_of_runs", {"run_ids": stale}), ("mailbox_of_runs", {"run_ids": stale})
            )
            return [
                _claimed(run_from(r), steps, mail) if r["id"] in stale else _claimed_row(r) for r in found
            ]
        return [_claimed_row(r) for r in found]

    def reload(self, lease: Lease) -> Claimed | None:
        def run(conn: Conn) -> Claimed | None:
            found, step_rows, mail_rows = read_together(
                conn, self._q, ("get_run", {"id": lease.run_id}), ("run_steps", {"run_id": lease.run_id}),
                ("mailbox_of_runs", {"run_ids": [lease.run_id]}),
            )  # fmt: skip
            row = run_from(found[0]) if found else None
            if row is None or row.lease_token != lease.token or row.status in TERMINAL:
                return None
            return _claimed(row, step_rows, mail_rows)

        return self._run("reload", run, autocommit=True, read=True)

    def commit(
        self, lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
        transaction: tuple[Any, StepRecord] | None = None,
    ) -> CommitResult:  # fmt: skip
        """Record a batch if the lease is still valid (see ``CommitResult``)."""
        simple = transaction is None and not batch.children and not batch.discards
        if simple and isinstance(batch.outcome, KeepRunning):
            return self._commit_hot(lease, now, lease_duration, batch)
        if simple and isinstance(batch.outcome, CompleteRun):
            done = self._commit_complete(lease, now, batch)
            if done is not None:
                return done  # else: lease lost, or a child run; the locked path tells which
        return self._transaction(
            "commit",
            lambda tx: self._commit_locked(tx, lease, now, lease_duration, batch, transaction),
            pipeline=transaction is None,
        )

    def _commit_hot(
        self, lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch
    ) -> CommitResult:
        """One statement, one round trip (autocommit): fenced lease extension + step upserts (+ the
        events the batch consumed)."""
        consumed = batch.consumed
        params: dict[str, Any] = {
            "run_id": lease.run_id, "token": lease.token, "owner": lease.owner, "now": pg_time(now),
            "lease_expires_at": pg_time(now) + lease_duration,
            "current_step_id": batch.current_step_id, "finished_step_id": batch.finished_step_id,
            "steps": steps_json(batch.steps),
            "event_ids": [i for i, _ in consumed], "event_steps": [s for _, s in consumed],
        }  # fmt: skip
        found = self._query("commit", "commit_keep_running", **params)
        return CommitResult(ok=True, held=bool(found[0]["held"])) if found else CommitResult(ok=False)

    def _commit_complete(self, lease: Lease, now: DateTime, batch: Batch) -> CommitResult | None:
        """One statement, one round trip (autocommit): the last step records and the completion of a
        run without a parent (see the ``commit_complete`` query); None when it did not apply."""
        assert isinstance(batch.outcome, CompleteRun)
        steps = batch.steps
        found = self._query(
            "commit", "commit_complete", run_id=lease.run_id, token=lease.token, owner=lease.owner,
            now=pg_time(now), current_step_id=batch.current_step_id,
            steps=steps_json(steps), output=json_value(batch.outcome.output),
            event_ids=[i for i, _ in batch.consumed], event_steps=[s for _, s in batch.consumed],
            channel=self._channels.runs,
        )  # fmt: skip
        return CommitResult(ok=True) if found else None

    def _commit_locked(
        self, tx: Tx, lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
        transaction: tuple[Any, StepRecord] | None,
    ) -> CommitResult:  # fmt: skip
        row = tx.lock(lease.run_id)
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
        record = run_transaction_step(tx.conn, transaction, now) if transaction else None
        if record is not None:
            steps.append(record)
        for child in batch.children:
            tx.insert_run(tr.new_row(child.run))
        if batch.discards:
            new = tr.events_returned(new, tx.discard_steps(row.id, batch.discards, now), now)
        if batch.consumed:
            ids, step_ids = [i for i, _ in batch.consumed], [s for _, s in batch.consumed]
            tx.conn.execute(
                self._q["consume_events"], {"run_id": row.id, "ids": ids, "step_ids": step_ids, "now": now}
            )
        tx.save(row, new, steps, now)
        held = new.held and not isinstance(batch.outcome, CompleteRun | FailRun)
        return CommitResult(ok=True, held=held, transaction_result=record)

    def heartbeat(
        self, leases: Sequence[Lease], now: DateTime, lease_duration: pendulum.Duration
    ) -> set[str]:
        if not leases:
            return set()
        lost = self._query(
            "heartbeat", "heartbeat", ids=[x.run_id for x in leases], owners=[x.owner for x in leases],
            tokens=[x.token for x in leases], now=pg_time(now), lease_expires_at=pg_time(now + lease_duration),
        )  # fmt: skip
        return {r["id"] for r in lost}

    def next_due(self, workflow_ids: Sequence[str]) -> DateTime | None:
        if not workflow_ids:
            return None
        found = self._query("next_due", "next_due", read=True, workflow_ids=list(workflow_ids))
        due = found[0]["due"] if found else None
        return None if due is None else pendulum.instance(due).in_timezone("UTC")

    # inspection (the Harness and tests) ------------------------------------------------------------

    def mailbox(self, run_id: str) -> list[Event]:
        """The run's unconsumed events, oldest first (as ``MemoryStore.mailbox``)."""
        return [event_from(r) for r in self._query("mailbox", "mailbox_of_runs", read=True, run_ids=[run_id])]

    def consumed_events(self, run_id: str) -> dict[int, str]:
        """Consumed event id -> the step that consumed it (as ``MemoryStore.consumed_events``)."""
        return {
            r["id"]: r["consumed_by_step"]
            for r in self._query("consumed_events", "consumed_events", read=True, run_id=run_id)
        }

    # waiting for changes ------------------------------------------------------------------------------

    def listen(self) -> None:
        """Start listening now (so no wake-up sent from here on is missed); idempotent."""
        self._hub.start()

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
        return self._run(
            "count_runs",
            lambda conn: count_runs(conn, self._q, workflow_id, resource_id),
            autocommit=True,
            read=True,
        )

    def list_workflows(self) -> list[WorkflowInfo]:
        return [_workflow_info(r) for r in self._query("list_workflows", "list_workflows", read=True)]

    def run_mailbox(self, run_id: str, resource_id: str | None) -> list[Event]:
        read = ("mailbox_of_runs", {"run_ids": [run_id]})
        mail = self._scoped_read("run_mailbox", run_id, resource_id, read)
        return [event_from(r) for r in mail]

    def child_runs(self, run_id: str, resource_id: str | None) -> list[RunRow]:
        found = self._scoped_read("child_runs", run_id, resource_id, ("child_runs", {"id": run_id}))
        children = [run_from(r) for r in found]
        return [c for c in children if resource_id is None or c.resource_id == resource_id]

    def _scoped_read(
        self, op: str, run_id: str, resource_id: str | None, read: tuple[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The rows of ``read`` about a run, read with the run's scope in one round trip;
        ``RunNotFoundError`` as ``get`` when the run is missing or of another resource."""

        def run(conn: Conn) -> list[dict[str, Any]]:
            scope, rows = read_together(conn, self._q, ("run_scope", {"id": run_id}), read)
            if not scope or (resource_id is not None and scope[0]["resource_id"] != resource_id):
                raise RunNotFoundError(not_found_message(run_id, resource_id))
            return rows

        return self._run(op, run, autocommit=True, read=True)

    # re-driving a failed or cancelled run (SPEC §14) --------------------------------------------------

    def retry_run(self, run_id: str, resource_id: str | None, from_step: str | None, now: DateTime) -> RunRow:
        """One short locked transaction, as ``change``: the pure rules decide, this writes."""

        def body(tx: Tx) -> RunRow:
            row = tx.lock_scoped(run_id, resource_id)
            new = tr.retry(row, now)
            steps = [step_from(r) for r in tx.rows("run_steps", run_id=run_id)]
            discarded = tr.records_to_discard(row, steps, from_step)
            deleted, rewritten = tr.split_discards(row, steps, discarded, now)
            if deleted:
                tx.discard_steps(run_id, deleted, now)  # their events go back to the mailbox
            tx.save(row, new, rewritten, now)  # notifies: runs (status) and wake (due now)
            if discarded:
                for child in [run_from(r) for r in tx.rows("lock_children", id=run_id)]:
                    if tr.orphaned_by_retry(child, discarded):
                        tx.save(child, tr.cancel(child, now), [], now)
            return new

        return self._transaction("retry_run", body)


@contextlib.contextmanager
def _mode(conn: Conn, autocommit: bool) -> Iterator[None]:
    """Put a pooled connection in autocommit for one operation (then restore it). Transactions need
    no switch: ``conn.transaction()`` works in either mode."""
    saved = conn.autocommit
    if autocommit and not saved:
        conn.autocommit = True
    try:
        yield
    finally:
        idle = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if conn.autocommit != saved and idle:
            conn.autocommit = saved


def _claimed_row(r: dict[str, Any]) -> Claimed:
    """A row of the ``claim`` query: the leased run, with its steps and mailbox as json arrays."""
    row = run_from(r)
    records = {s["step_id"]: step_from(s) for s in r["step_rows"] or ()}
    mailbox = [event_from(e) for e in r["mailbox_rows"] or ()]
    return Claimed(row, records, mailbox, Lease(row.id, row.lease_owner or "", row.lease_token))


def _claimed(row: RunRow, steps: list[dict[str, Any]], mail: list[dict[str, Any]]) -> Claimed:
    records = {r["step_id"]: step_from(r) for r in steps if r["run_id"] == row.id}
    mailbox: list[Event] = [event_from(r) for r in mail if r["run_id"] == row.id]
    return Claimed(row, records, mailbox, Lease(row.id, row.lease_owner or "", row.lease_token))


def _workflow_info(r: dict[str, Any]) -> WorkflowInfo:
    steps = tuple(serde.converter.structure(r["steps"], list[StepInfo]))
    return WorkflowInfo(r["id"], steps, pendulum.instance(r["registered_at"]).in_timezone("UTC"))
