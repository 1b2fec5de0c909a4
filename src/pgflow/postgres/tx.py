"""One store transaction: lock runs, write them back as the pure transitions say, cascade, notify.

:class:`Tx` mirrors ``MemoryStore._save``/``_ended``: a run reaching a terminal status cancels its
live children (recursively) and settles its parent's waiting ``Child`` step. Notifications are
collected and sent just before COMMIT, so listeners see them exactly when the change is visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pendulum
import psycopg
from psycopg.rows import dict_row

from pgflow import serde, step_records
from pgflow import transitions as tr
from pgflow.errors import RunNotFoundError
from pgflow.memory import not_found_message
from pgflow.records import TERMINAL, RunStatus, StepRecord
from pgflow.store import RunRow

from .queries import Queries
from .rows import run_from, run_params, step_from, steps_json

__all__ = [
    "Channels",
    "Tx",
    "UserCodeError",
    "pipelined_transaction",
    "read_together",
    "run_transaction_step",
]

DateTime = pendulum.DateTime
Conn = psycopg.Connection[Any]


@contextlib.contextmanager
def pipelined_transaction(conn: Conn) -> Iterator[None]:
    """BEGIN … COMMIT as plain statements in a pipeline, on an autocommit connection.

    ``conn.transaction()`` syncs after BEGIN and before COMMIT; here BEGIN travels with the first
    query and COMMIT with the last writes. Results fetched after the block are already there. On any
    error (server or Python) the transaction is rolled back before the exception propagates."""
    if not conn.autocommit:
        raise RuntimeError("pipelined_transaction needs an autocommit connection")
    try:
        with conn.pipeline():
            conn.execute(b"BEGIN")
            yield
            conn.execute(b"COMMIT")
    except BaseException:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):  # a broken connection is discarded by the pool
                conn.execute(b"ROLLBACK")
        raise


def read_together(
    conn: Conn, queries: Queries, *reads: tuple[str, dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """Run several read queries in one pipeline (one round trip on an autocommit connection)."""
    with conn.pipeline():
        cursors = [conn.cursor(row_factory=dict_row).execute(queries[name], params) for name, params in reads]
    return [cur.fetchall() for cur in cursors]


class Channels:
    """The notification channels of one schema."""

    def __init__(self, wake: str, runs: str) -> None:
        self.wake = wake
        self.runs = runs


class Tx:
    """Helpers bound to one connection inside an open transaction."""

    def __init__(self, conn: Conn, queries: Queries, channels: Channels) -> None:
        self.conn = conn
        self._q = queries
        self._channels = channels
        self._notes: dict[tuple[str, str], None] = {}

    # reading ---------------------------------------------------------------------------------------

    def cursor(self, name: str, **params: Any) -> psycopg.Cursor[dict[str, Any]]:
        """Execute query ``name``; in pipeline mode the result is fetched later."""
        return self.conn.cursor(row_factory=dict_row).execute(self._q[name], params)

    def rows(self, name: str, **params: Any) -> list[dict[str, Any]]:
        return self.cursor(name, **params).fetchall()

    def lock(self, run_id: str) -> RunRow | None:
        found = self.rows("lock_run", id=run_id)
        return run_from(found[0]) if found else None

    def lock_scoped(self, run_id: str, resource_id: str | None) -> RunRow:
        """Lock a run, or raise RunNotFoundError (also when it belongs to another resource)."""
        row = self.lock(run_id)
        if row is None or (resource_id is not None and row.resource_id != resource_id):
            raise RunNotFoundError(not_found_message(run_id, resource_id))
        return row

    def step(self, run_id: str, step_id: str) -> StepRecord | None:
        found = self.rows("run_step", run_id=run_id, step_id=step_id)
        return step_from(found[0]) if found else None

    # writing ---------------------------------------------------------------------------------------

    def insert_run(self, row: RunRow) -> bool:
        """Insert a new run; False when its id or idempotency key exists already."""
        inserted = bool(self.rows("insert_run", **run_params(row)))
        if inserted:
            self._note(self._channels.wake, "")
            self._note(self._channels.runs, row.id)
        return inserted

    def discard_steps(self, run_id: str, step_ids: Sequence[str], now: DateTime) -> set[str]:
        """Delete these step records; the events they had taken go back to the mailbox (their names)."""
        returned = self.rows("release_events", run_id=run_id, step_ids=list(step_ids))
        self.conn.execute(self._q["delete_steps"], {"run_id": run_id, "step_ids": list(step_ids)})
        return {r["name"] for r in returned}

    def upsert_steps(self, run_id: str, steps: Sequence[StepRecord]) -> None:
        if steps:
            self.conn.execute(self._q["upsert_steps"], {"run_id": run_id, "steps": steps_json(steps)})

    def save(self, old: RunRow, new: RunRow, steps: Sequence[StepRecord], now: DateTime) -> None:
        """Write a locked run and its step records; cascade what a terminal status implies."""
        self.conn.execute(self._q["update_run"], run_params(new))
        self.upsert_steps(new.id, steps)
        if new.status != old.status:
            self._note(self._channels.runs, new.id)
        if new.due_at is not None and (new.due_at != old.due_at or new.status != old.status):
            self._note(self._channels.wake, "")
        if new.status in TERMINAL and old.status not in TERMINAL:
            self._ended(new, now)

    def _ended(self, row: RunRow, now: DateTime) -> None:
        if row.status == RunStatus.CANCELLED:
            for child in [run_from(r) for r in self.rows("lock_children", id=row.id)]:
                self.save(child, tr.cancel(child, now), [], now)
        if row.parent_run_id is not None and row.parent_step_id is not None:
            parent = self.lock(row.parent_run_id)
            step = self.step(row.parent_run_id, row.parent_step_id)
            if parent is not None and step is not None and tr.waits_for_child(step, row.id):
                new_parent, done = tr.child_finished(parent, step, row, now)
                self.save(parent, new_parent, [done], now)

    # notifications -----------------------------------------------------------------------------------

    def _note(self, channel: str, payload: str) -> None:
        self._notes[(channel, payload)] = None

    def wake(self) -> None:
        """Tell sleeping workers to look for work when this transaction commits."""
        self._note(self._channels.wake, "")

    def flush(self) -> None:
        """Queue the collected notifications (sent by Postgres at COMMIT)."""
        if self._notes:
            channels = [c for c, _ in self._notes]
            payloads = [p for _, p in self._notes]
            self.conn.execute(self._q["notify"], {"channels": channels, "payloads": payloads})
            self._notes.clear()


class UserCodeError(Exception):
    """A Transaction step's function (or its result's serialisation) failed: re-raised as is."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def run_transaction_step(conn: Conn, transaction: tuple[Any, StepRecord], now: DateTime) -> StepRecord:
    """Call a Transaction step's ``fn(conn, *args)`` and build its completed record."""
    cmd, base = transaction
    try:
        result = cmd.fn(conn, *cmd.args) if hasattr(cmd, "fn") else cmd(conn)
        output = serde.to_json(result, root=f"result of step {base.step_id!r}")
    except Exception as exc:
        raise UserCodeError(exc) from exc
    return step_records.completed(base, output, now)
