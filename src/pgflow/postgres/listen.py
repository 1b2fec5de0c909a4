"""LISTEN/NOTIFY for the Postgres store: ONE connection per store feeds every waiter.

Two channels per schema: ``wake`` (work may be claimable: a run was started, woken or released)
and ``runs`` (a run's status changed; the payload is its id). Notifications are sent inside the
writing transaction, so they arrive exactly when the change is visible.

A :class:`Hub` owns a dedicated autocommit connection LISTENing on ``runs`` (and on ``wake`` once a
worker needs it: a ``Client``'s hub never does, so the server does not signal it for every run
started) and a reader thread that dispatches each notification: ``wake`` to the worker's
dispatcher, ``runs`` to the ``wait_for_run`` calls waiting for that run id (so waiting costs no
connection). When the connection
breaks, every waiter is woken (it re-reads the database) and the hub reconnects; meanwhile, and when
LISTEN cannot work at all (a transaction-pooling PgBouncer never delivers notifications: a probe
finds out at connect time and one warning says so), waiters fall back to polling every second.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
from psycopg import sql

__all__ = ["FALLBACK_POLL", "Hub", "RunWaiter", "channel", "warn_unavailable"]

log = logging.getLogger("pgflow.listen")
Connect = Callable[[], psycopg.Connection[object]]
FALLBACK_POLL = 1.0  # seconds between re-reads when notifications cannot arrive
_READ_SLICE = 0.25  # seconds the reader blocks before it looks at the stop flag
_RECONNECT_DELAY = 0.25  # seconds between reconnection attempts
_PROBE_TIMEOUT = 1.0  # seconds a probe notification may take to come back
_PROBE_PREFIX = "pgflow-probe:"
_warned: set[str] = set()  # "LISTEN unavailable" is said once per process and database
_warned_lock = threading.Lock()


def channel(kind: str, schema: str) -> str:
    """The channel for ``kind`` (``wake`` or ``runs``) in ``schema``; hashed when too long for a name."""
    name = f"pgflow_{kind}_{schema}"
    if len(name.encode()) <= 63:
        return name
    return f"pgflow_{kind}_" + hashlib.sha256(schema.encode()).hexdigest()[:40]


def warn_unavailable(where: str) -> None:
    """Say once per process and database that LISTEN cannot work there (both hubs use it)."""
    with _warned_lock:
        first = where not in _warned
        _warned.add(where)
    if first:
        log.warning(
            "pgflow: LISTEN/NOTIFY does not reach %s (a transaction-pooling PgBouncer does not "
            "forward notifications): workers and wait_for_run poll every %g s instead. Pass "
            "listen_dsn= a direct connection string to PostgreSQL for instant wake-ups.",
            where, FALLBACK_POLL,
        )  # fmt: skip


class RunWaiter:
    """Waits for status changes of one run (from :meth:`Hub.watch`). Registered before the caller
    reads the run, so a change between that read and :meth:`wait` is never missed."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._changed = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True when the run may have changed (re-read it), False after ``timeout`` seconds."""
        if not self._hub.listening:
            timeout = min(timeout, FALLBACK_POLL)
        got = self._changed.wait(max(timeout, 0.0))
        self._changed.clear()
        return got


class Hub:
    """The store's one LISTEN connection and the waiters it feeds. Thread-safe; starts lazily."""

    def __init__(
        self, connect: Connect, wake_channel: str, runs_channel: str, probe: Callable[[str], None], where: str
    ) -> None:
        self._connect = connect
        self._wake_channel = wake_channel
        self._runs_channel = runs_channel
        self._probe = probe  # sends a notification on the runs channel through the store's pool
        self._where = where  # names the database and schema in log lines
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._runs: dict[str, set[RunWaiter]] = {}
        self._ready = threading.Event()  # the first connection attempt has finished
        self._want_wake = False  # a worker waits for wake-ups: LISTEN on the wake channel too
        self._wake_listened = threading.Event()  # this connection LISTENs on the wake channel
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[object] | None = None
        self.listening = False  # notifications arrive now
        self.unavailable = False  # LISTEN cannot work here: polling for good

    # waiting ---------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0, *, wake: bool = False) -> None:
        """Listen from now on (idempotent): returns once the first connection attempt is over, so
        notifications sent after this call are seen (when LISTEN works at all). ``wake``: on the wake
        channel too (a worker's); a hub already listening adds it within a read slice."""
        with self._lock:
            self._want_wake = self._want_wake or wake
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._read_loop, name="pgflow-listen", daemon=True)
                self._thread.start()
        self._ready.wait(timeout)
        if wake and self.listening:
            self._wake_listened.wait(timeout)

    def wait_wake(self, timeout: float) -> bool:
        """Block until work may be claimable (a ``wake`` notification) or ``timeout``; True when woken."""
        self.start(wake=True)
        got = self._wake.wait(max(timeout, 0.0))
        self._wake.clear()
        return got

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[RunWaiter]:
        """A waiter for changes of ``run_id``: enter it, read the run, then ``wait`` in a loop."""
        self.start()
        waiter = RunWaiter(self)
        with self._lock:
            self._runs.setdefault(run_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                found = self._runs.get(run_id)
                if found is not None:
                    found.discard(waiter)
                    if not found:
                        del self._runs[run_id]

    def close(self) -> None:
        """Stop listening; the reader thread ends within a fraction of a second."""
        self._closed.set()
        self._wake_everyone()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    # the reader thread ---------------------------------------------------------------------------

    def _read_loop(self) -> None:
        down_since_logged = False
        while not self._closed.is_set():
            try:
                self._listen_once()
                down_since_logged = False
            except psycopg.Error as exc:
                if not down_since_logged:
                    log.warning("pgflow: LISTEN connection to %s lost (%s); reconnecting, polling meanwhile",
                                self._where, str(exc).strip())  # fmt: skip
                    down_since_logged = True
            finally:
                self._disconnect()
            if self.unavailable:
                return
            self._closed.wait(_RECONNECT_DELAY)

    def _listen_once(self) -> None:
        conn = self._connect()
        self._conn = conn
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._runs_channel)))
        self._listen_wake_if_wanted(conn)
        if not self._probe_works(conn):
            self._give_up()
            return
        self.listening = True
        if self._ready.is_set():  # a reconnection: what was sent while we were away is lost, re-read
            self._wake_everyone()
        self._ready.set()
        while not self._closed.is_set():
            for note in conn.notifies(timeout=_READ_SLICE):
                self._dispatch(note.channel, note.payload)
            self._listen_wake_if_wanted(conn)

    def _listen_wake_if_wanted(self, conn: psycopg.Connection[object]) -> None:
        if self._want_wake and not self._wake_listened.is_set():
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._wake_channel)))
            self._wake_listened.set()  # start(wake=True) returns: wake-ups from now on are seen

    def _probe_works(self, conn: psycopg.Connection[object]) -> bool:
        """Send a notification through the pool and see it arrive here (a transaction-pooling
        PgBouncer accepts LISTEN but never delivers)."""
        token = _PROBE_PREFIX + uuid.uuid4().hex
        try:
            self._probe(token)
        except Exception as exc:  # the pool cannot reach the database: count it as a lost connection
            raise psycopg.OperationalError(f"probe failed: {exc}") from exc
        for note in conn.notifies(timeout=_PROBE_TIMEOUT):
            if note.payload == token:
                return True
            self._dispatch(note.channel, note.payload)
        return False

    def _give_up(self) -> None:
        self.unavailable = True
        self._ready.set()
        warn_unavailable(self._where)

    def _dispatch(self, channel_name: str, payload: str) -> None:
        if channel_name == self._wake_channel:
            self._wake.set()
            return
        if payload.startswith(_PROBE_PREFIX):
            return
        with self._lock:
            waiters = list(self._runs.get(payload, ()))
        for waiter in waiters:
            waiter._changed.set()

    def _disconnect(self) -> None:
        was_listening, self.listening = self.listening, False
        self._wake_listened.clear()  # a new connection LISTENs again
        self._ready.set()  # a first attempt that failed still ends start()'s wait (polling meanwhile)
        if was_listening:
            self._wake_everyone()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _wake_everyone(self) -> None:
        self._wake.set()
        with self._lock:
            waiters = [w for found in self._runs.values() for w in found]
        for waiter in waiters:
            waiter._changed.set()
