"""LISTEN/NOTIFY on the event loop: the asyncio form of :mod:`pgflow.postgres.listen`'s hub.

One ``psycopg.AsyncConnection`` per store LISTENs on the schema's two channels; a reader task
dispatches each notification to the waiters (``asyncio.Event``s) registered for it, so any number
of concurrent ``wait_for_run`` calls cost one connection and no thread. The rules are those of the
threaded hub (the same channels, probe, warning and fallback polling): see that module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
from psycopg import sql

from .listen import (
    _PROBE_PREFIX,
    _PROBE_TIMEOUT,
    _READ_SLICE,
    _RECONNECT_DELAY,
    FALLBACK_POLL,
    warn_unavailable,
)

__all__ = ["AsyncHub", "AsyncRunWaiter"]

log = logging.getLogger("pgflow.listen")
AsyncConnect = Callable[[], Awaitable[psycopg.AsyncConnection[object]]]


class AsyncRunWaiter:
    """Waits on the event loop for changes of one run (from :meth:`AsyncHub.watch`)."""

    def __init__(self, hub: AsyncHub) -> None:
        self._hub = hub
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True when the run may have changed (re-read it), False after ``timeout`` seconds."""
        if not self._hub.listening:
            timeout = min(timeout, FALLBACK_POLL)
        try:
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        self._changed.clear()
        return True


class AsyncHub:
    """The store's one LISTEN connection on the event loop, and the waiters it feeds."""

    def __init__(
        self, connect: AsyncConnect, wake_channel: str, runs_channel: str,
        probe: Callable[[str], Awaitable[None]], where: str,
    ) -> None:  # fmt: skip
        self._connect = connect
        self._wake_channel = wake_channel
        self._runs_channel = runs_channel
        self._probe = probe
        self._where = where
        self._wake = asyncio.Event()
        self._runs: dict[str, set[AsyncRunWaiter]] = {}
        self._ready = asyncio.Event()
        self._want_wake = False  # a worker waits for wake-ups: LISTEN on the wake channel too
        self._wake_listened = asyncio.Event()  # this connection LISTENs on the wake channel
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.listening = False
        self.unavailable = False

    async def start(self, timeout: float = 10.0, *, wake: bool = False) -> None:
        """Listen from now on (idempotent); returns once the first connection attempt is over.
        ``wake``: on the wake channel too (a worker's); a hub already listening adds it within a read
        slice."""
        self._want_wake = self._want_wake or wake
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._read_loop(), name="pgflow-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
            if wake and self.listening:
                await asyncio.wait_for(self._wake_listened.wait(), timeout)

    async def wait_wake(self, timeout: float) -> bool:
        await self.start(wake=True)
        try:
            await asyncio.wait_for(self._wake.wait(), max(timeout, 0.0))
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    @contextlib.asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[AsyncRunWaiter]:
        """A waiter for changes of ``run_id``: enter it, read the run, then ``await wait`` in a loop."""
        await self.start()
        waiter = AsyncRunWaiter(self)
        self._runs.setdefault(run_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            found = self._runs.get(run_id)
            if found is not None:
                found.discard(waiter)
                if not found:
                    del self._runs[run_id]

    async def close(self) -> None:
        self._closed = True
        self._wake_everyone()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # the reader task ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        down_logged = False
        while not self._closed:
            conn: psycopg.AsyncConnection[object] | None = None
            try:
                conn = await self._connect()
                await self._listen_on(conn)
                down_logged = False
            except psycopg.Error as exc:
                if not down_logged:
                    log.warning("pgflow: LISTEN connection to %s lost (%s); reconnecting, polling meanwhile",
                                self._where, str(exc).strip())  # fmt: skip
                    down_logged = True
            finally:
                self._disconnected()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if self.unavailable:
                return
            await asyncio.sleep(_RECONNECT_DELAY)

    async def _listen_on(self, conn: psycopg.AsyncConnection[object]) -> None:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._runs_channel)))
        await self._listen_wake_if_wanted(conn)
        if not await self._probe_works(conn):
            self.unavailable = True
            self._ready.set()
            warn_unavailable(self._where)
            return
        self.listening = True
        if self._ready.is_set():  # a reconnection: what was sent while we were away is lost, re-read
            self._wake_everyone()
        self._ready.set()
        while not self._closed:
            async for note in conn.notifies(timeout=_READ_SLICE):
                self._dispatch(note.channel, note.payload)
            await self._listen_wake_if_wanted(conn)

    async def _listen_wake_if_wanted(self, conn: psycopg.AsyncConnection[object]) -> None:
        if self._want_wake and not self._wake_listened.is_set():
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._wake_channel)))
            self._wake_listened.set()  # start(wake=True) returns: wake-ups from now on are seen

    async def _probe_works(self, conn: psycopg.AsyncConnection[object]) -> bool:
        token = _PROBE_PREFIX + uuid.uuid4().hex
        try:
            await self._probe(token)
        except Exception as exc:
            raise psycopg.OperationalError(f"probe failed: {exc}") from exc
        async for note in conn.notifies(timeout=_PROBE_TIMEOUT):
            if note.payload == token:
                return True
            self._dispatch(note.channel, note.payload)
        return False

    def _dispatch(self, channel_name: str, payload: str) -> None:
        if channel_name == self._wake_channel:
            self._wake.set()
        elif not payload.startswith(_PROBE_PREFIX):
            for waiter in list(self._runs.get(payload, ())):
                waiter._changed.set()

    def _disconnected(self) -> None:
        was_listening, self.listening = self.listening, False
        self._wake_listened.clear()  # a new connection LISTENs again
        self._ready.set()
        if was_listening:
            self._wake_everyone()

    def _wake_everyone(self) -> None:
        self._wake.set()
        for found in list(self._runs.values()):
            for waiter in list(found):
                waiter._changed.set()
