"""LISTEN/NOTIFY for the Postgres store: channel names and listeners on dedicated connections.

Two channels per schema: ``wake`` (work may be claimable: a run was started, woken or released)
and ``runs`` (a run's status changed; the payload is its id). Notifications are sent inside the
writing transaction, so they arrive exactly when the change is visible.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

__all__ = ["Listener", "RunWatcher", "channel"]

Connect = Callable[[], psycopg.Connection[object]]


def channel(kind: str, schema: str) -> str:
    """The channel for ``kind`` (``wake`` or ``runs``) in ``schema``; hashed when too long for a name."""
    name = f"pgflow_{kind}_{schema}"
    if len(name.encode()) <= 63:
        return name
    return f"pgflow_{kind}_" + hashlib.sha256(schema.encode()).hexdigest()[:40]


class Listener:
    """One autocommit connection (not from the pool) LISTENing on one channel. Thread-safe."""

    def __init__(self, connect: Connect, channel_name: str) -> None:
        self._connect = connect
        self.channel = channel_name
        self._conn: psycopg.Connection[object] | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Connect and LISTEN (idempotent); notifications sent from now on are never missed."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> psycopg.Connection[object]:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self._conn = conn
        return self._conn

    def wait(self, timeout: float, payload: str | None = None) -> bool:
        """Block until a notification (with ``payload``, when given) arrives or ``timeout`` passes.

        Notifications that arrived since the last wait count at once. On a broken connection the
        listener reconnects on the next call and this one reports True (a spurious wake-up: the
        caller re-reads the database, where a real outage surfaces as an error)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            conn = self._ensure()
            try:
                return self._wait(conn, deadline, payload)
            except psycopg.OperationalError:
                self._drop()
                return True

    @staticmethod
    def _wait(conn: psycopg.Connection[object], deadline: float, payload: str | None) -> bool:
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            got = False
            for note in conn.notifies(timeout=remaining, stop_after=1):
                got = got or payload is None or note.payload == payload
            if got:
                return True
            if time.monotonic() >= deadline:
                return False

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class RunWatcher:
    """Waits for status changes of runs (from :meth:`PostgresStore.watch_runs`)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    def wait(self, run_id: str, timeout: float) -> bool:
        """True when run ``run_id`` changed status (re-read it), False after ``timeout`` seconds."""
        return self._listener.wait(timeout, payload=run_id)
