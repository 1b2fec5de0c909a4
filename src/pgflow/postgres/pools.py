"""The connection pools pgflow builds: checked before use, quick to reconnect after an outage.

Connections that sat idle are checked before a caller gets them (a PostgreSQL restart or failover
leaves every pooled connection broken: none is handed out), and a pool whose connections were lost
retries connecting every quarter second rather than backing off to 8 s and more, so work resumes
within a second or two of the server accepting connections again. One failed check drains the pool
(what broke one connection broke the others): psycopg_pool waits 1, 2, 4, 8… s between failed
checks within one ``getconn``, so a caller meeting the k broken connections of an idle pool one by
one would wait 2^(k-1) - 1 s, or time out after 30 s (the chaos test, ``tests/test_chaos.py``,
saw it). ``prepare=False`` turns off server-side prepared statements, for transaction-pooling
PgBouncer.

Idle connections are handed out most recently used first (psycopg_pool's own order is oldest
first): a steady load then runs on a few hot connections whose statements are already prepared and
planned (PostgreSQL plans a prepared statement 5 times before it settles on a cached plan, per
connection), instead of round-robin over all of them — 0.5–1 ms off a one-step run's latency.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

__all__ = ["connection_kwargs", "make_async_pool", "make_pool"]

IDLE_BEFORE_CHECK = 0.1  # seconds: a connection idle longer is checked before use (hot path: never)


def connection_kwargs(prepare: bool = True) -> dict[str, Any]:
    """The settings of every connection pgflow opens itself."""
    kwargs: dict[str, Any] = {"autocommit": True}
    if not prepare:
        kwargs["prepare_threshold"] = None  # no server-side prepared statements (PgBouncer)
    return kwargs


class _QuickReconnect(AttemptWithBackoff):
    """Reconnection attempts every 0.25-1 s instead of psycopg_pool's 1 s doubling (1, 2, 4, 8 s…)."""

    INITIAL_DELAY = 0.25
    DELAY_BACKOFF = 1.5
    MAX_DELAY = 1.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY)


class _LastUse:
    """When each connection went back to the pool, so only connections idle for a while are checked;
    a failed check drains the pool (see the module doc). The pool records a return in its
    ``putconn`` (not with a ``reset`` callback: with one, psycopg_pool returns every connection
    through its worker thread, a thread hand-off per statement and a connection not yet back for the
    caller's next statement)."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self.pool: weakref.ReferenceType[ConnectionPool] | None = None

    def returned(self, conn: psycopg.Connection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection[Any]) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > IDLE_BEFORE_CHECK:
            try:
                ConnectionPool.check_connection(conn)
            except Exception:
                pool = self.pool() if self.pool is not None else None
                drain = getattr(pool, "drain", None)  # psycopg_pool >= 3.3
                if drain is not None:
                    drain()  # idle connections closed and replaced; those in use closed when returned
                raise


class _HottestFirst(deque[Any]):
    """The idle connections of a pool: psycopg_pool appends returned ones and takes from the left;
    taking from the right instead hands out the most recently used. (Shrinking, which also takes
    from the left, then closes a recently used idle connection: harmless, it only happens after
    ``max_idle`` of unused capacity.)"""

    def popleft(self) -> Any:
        return self.pop()


def _hottest_first(pool: ConnectionPool | AsyncConnectionPool) -> None:
    idle = getattr(pool, "_pool", None)
    if type(idle) is deque:  # psycopg_pool 3.x; another layout keeps its own order
        pool._pool = _HottestFirst(idle)


class _Pool(ConnectionPool):
    last_use: _LastUse

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        self.last_use.returned(conn)
        super().putconn(conn)

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _QuickReconnect(timeout=self.reconnect_timeout), growing)


def make_pool(dsn: str, *, max_size: int, name: str, prepare: bool = True) -> ConnectionPool:
    """An open pool of autocommit connections to ``dsn``, checked and quick to heal (see module doc)."""
    last_use = _LastUse()
    pool = _Pool(
        dsn, min_size=1, max_size=max_size, kwargs=connection_kwargs(prepare), open=False, name=name,
        check=last_use.check,
    )  # fmt: skip
    _hottest_first(pool)  # before it opens: no connection is added to the old deque meanwhile
    pool.last_use = last_use
    last_use.pool = weakref.ref(pool)
    pool.open()
    return pool


# -- the same for the event loop (AsyncClient, AsyncEngine) -------------------------------------------


class _AsyncLastUse:
    """:class:`_LastUse` for an ``AsyncConnectionPool``."""

    def __init__(self) -> None:
        self._returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self.pool: weakref.ReferenceType[AsyncConnectionPool] | None = None

    def returned(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    async def check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > IDLE_BEFORE_CHECK:
            try:
                await AsyncConnectionPool.check_connection(conn)
            except Exception:
                pool = self.pool() if self.pool is not None else None
                if pool is not None:
                    await pool.drain()
                raise


class _AsyncPool(AsyncConnectionPool):
    last_use: _AsyncLastUse

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.last_use.returned(conn)
        await super().putconn(conn)

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or _QuickReconnect(timeout=self.reconnect_timeout), growing)


async def make_async_pool(dsn: str, *, max_size: int, name: str, prepare: bool = True) -> AsyncConnectionPool:
    """:func:`make_pool` for the event loop: open, checked, quick to heal."""
    last_use = _AsyncLastUse()
    pool = _AsyncPool(
        dsn, min_size=1, max_size=max_size, kwargs=connection_kwargs(prepare), open=False, name=name,
        check=last_use.check,
    )  # fmt: skip
    _hottest_first(pool)  # before it opens
    pool.last_use = last_use
    last_use.pool = weakref.ref(pool)
    await pool.open(wait=True)
    return pool
