"""The Postgres store's operations as generators of SQL effects, and their two executors.

Each store operation is written once, as a generator that yields what it needs from the database —
:class:`Rows` (a statement whose rows it reads), :class:`Send` (a write whose result it does not
need), :class:`RowsTogether` (several reads in one round trip), :class:`WithConnection` (a user's
``Transaction`` function, given the connection) — and receives the answer back (psycopg's
``generators.py`` shape). :class:`SyncExecutor` runs such a generator on a pooled
``psycopg.Connection``; :class:`AsyncExecutor` on a pooled ``psycopg.AsyncConnection``. Both apply
the same error rules (:func:`classify`): deadlocks retried, a read on a broken connection retried once,
values PostgreSQL refuses raised as ``SerializationError``, any other database failure as
``StorageError``. Nothing else differs between the threaded and the asyncio store.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from typing import Any, Literal, TypeVar

import attrs
import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import PoolTimeout

from pgflow.errors import SerializationError, StorageError

from .queries import Queries

__all__ = [
    "AsyncExecutor",
    "Mode",
    "Raw",
    "Rows",
    "RowsTogether",
    "Send",
    "SqlGen",
    "SyncExecutor",
    "WithConnection",
    "classify",
]

T = TypeVar("T")
Row = dict[str, Any]
Mode = Literal["statement", "transaction", "user-transaction"]
_ATTEMPTS = 3
_DEADLOCKS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# SQLSTATE class 22 (data exception; psycopg raises DataError itself too, e.g. for a NUL in a text
# parameter) and class 54 (a value over a program limit, e.g. a too deeply nested jsonb)
_REFUSED_VALUES = (psycopg.DataError, pg_errors.ProgramLimitExceeded)


@attrs.frozen
class Rows:
    """Run query ``name`` and read its rows (``parts`` fill extra ``{placeholders}``)."""

    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    parts: Mapping[str, Any] | None = None


@attrs.frozen
class Send:
    """Run query ``name``; its result is not needed (inside a transaction it costs no round trip)."""

    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Raw:
    """Run a composed statement that is not a named query (migrations); its rows, if any."""

    statement: Any
    params: Any = None


@attrs.frozen
class RowsTogether:
    """Several reads in one round trip (a pipeline); their rows, in order."""

    reads: tuple[Rows, ...]


@attrs.frozen
class WithConnection:
    """Call ``fn(conn, *args)`` with the executor's connection (a Transaction step's function; it is
    awaited when it is a coroutine function and the executor is asynchronous)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


SqlEffect = Rows | Raw | Send | RowsTogether | WithConnection
SqlGen = Generator[SqlEffect, Any, T]


class UserCodeError(Exception):
    """A user's function called by :class:`WithConnection` raised: re-raised as is, after rollback."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


# -- the error rules, shared --------------------------------------------------------------------------


Verdict = Literal["retry", "raise"]


def classify(
    exc: BaseException, attempt: int, *, read: bool, retried_read: bool
) -> tuple[Verdict, BaseException]:
    """What to do with an exception raised while running an operation (attempt 1, 2, …): retry it, or
    raise the returned exception (a pgflow error, or the user's own)."""
    if isinstance(exc, UserCodeError):
        return "raise", exc.original
    broken = isinstance(exc, psycopg.OperationalError) and not isinstance(exc, PoolTimeout)
    if broken and read and not retried_read:  # a broken connection: a read is retried once, on another one
        return "retry", exc
    if isinstance(exc, _DEADLOCKS) and attempt < _ATTEMPTS:
        return "retry", exc
    if isinstance(exc, _REFUSED_VALUES):  # bad data, not a failing database: retrying cannot help
        return "raise", SerializationError(f"PostgreSQL cannot store a value: {exc}")
    if isinstance(exc, psycopg.Error):
        return "raise", StorageError(str(exc))
    return "raise", exc


def _named(op: str, schema: str, exc: BaseException, attempt: int) -> BaseException:
    """Name the operation and schema in a pgflow error raised for the database."""
    if isinstance(exc, StorageError):
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        return StorageError(f"{op} failed on schema {schema!r}{tries}: {exc}")
    if isinstance(exc, SerializationError) and str(exc).startswith("PostgreSQL"):
        return SerializationError(f"{op} on schema {schema!r}: {exc}")
    return exc


# -- the blocking executor --------------------------------------------------------------------------------


class SyncExecutor:
    """Runs SQL-effect generators on a ``psycopg_pool.ConnectionPool`` (autocommit connections)."""

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], queries: Queries) -> None:
        self.pool = pool
        self._q = queries

    def run(
        self, op: str, make: Callable[[], SqlGen[T]], *, mode: Mode = "statement", read: bool = False
    ) -> T:
        """Run a fresh generator from ``make()`` (again on a retry) on a pooled connection."""
        retried_read = False
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self.pool.connection() as conn:
                    if mode == "statement" and conn.autocommit:  # the hot path: no mode to set up
                        return self._drive(conn, make(), pipelined=False)
                    with _autocommit(conn), self._scope(conn, mode):
                        return self._drive(conn, make(), pipelined=mode == "transaction")
            except BaseException as exc:
                verdict, error = classify(exc, attempt, read=read, retried_read=retried_read)
                if verdict == "retry" and attempt < _ATTEMPTS:
                    retried_read = retried_read or isinstance(exc, psycopg.OperationalError)
                    continue
                if error is exc:
                    raise
                raise _named(op, self._q.schema, error, attempt) from (
                    exc if not isinstance(exc, UserCodeError) else None
                )
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _scope(self, conn: psycopg.Connection[Any], mode: Mode) -> Iterator[None]:
        if mode == "statement":
            yield
        elif mode == "user-transaction":
            with conn.transaction():
                yield
        else:
            with _pipelined_transaction(conn):
                yield

    def _drive(self, conn: psycopg.Connection[Any], gen: SqlGen[T], *, pipelined: bool) -> T:
        answer: Any = None
        while True:
            try:
                effect = gen.send(answer)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            answer = self._perform(conn, effect, pipelined)

    def _perform(self, conn: psycopg.Connection[Any], effect: SqlEffect, pipelined: bool) -> Any:
        if isinstance(effect, Rows):
            return conn.cursor(row_factory=dict_row).execute(self._query(effect), effect.params).fetchall()
        if isinstance(effect, Send):
            conn.execute(self._q[effect.name], effect.params)
            return None
        if isinstance(effect, Raw):
            cur = conn.cursor(row_factory=dict_row).execute(effect.statement, effect.params)
            return cur.fetchall() if cur.description else []
        if isinstance(effect, RowsTogether):
            if pipelined:  # already in a pipeline
                return [self._perform(conn, read, pipelined) for read in effect.reads]
            with conn.pipeline():
                cursors = [
                    conn.cursor(row_factory=dict_row).execute(self._query(r), r.params) for r in effect.reads
                ]
            return [cur.fetchall() for cur in cursors]
        try:
            return effect.fn(conn, *effect.args)
        except Exception as exc:
            raise UserCodeError(exc) from exc

    def _query(self, effect: Rows) -> Any:
        return self._q.render(effect.name, effect.parts) if effect.parts else self._q[effect.name]


@contextlib.contextmanager
def _autocommit(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Pooled connections are autocommit; a caller-owned pool's may not be: switch for the operation."""
    if conn.autocommit:
        yield
        return
    conn.autocommit = True
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.autocommit = False


@contextlib.contextmanager
def _pipelined_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """BEGIN … COMMIT as plain statements in a pipeline: BEGIN travels with the first query and COMMIT
    with the last writes (two round trips for read-then-write). Rolled back on any error."""
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


# -- the asyncio executor ---------------------------------------------------------------------------------


class AsyncExecutor:
    """Runs SQL-effect generators on a ``psycopg_pool.AsyncConnectionPool`` (autocommit connections)."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], queries: Queries) -> None:
        self.pool = pool
        self._q = queries

    async def run(
        self, op: str, make: Callable[[], SqlGen[T]], *, mode: Mode = "statement", read: bool = False
    ) -> T:
        retried_read = False
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with self.pool.connection() as conn, _async_autocommit(conn), self._scope(conn, mode):
                    return await self._drive(conn, make(), pipelined=mode == "transaction")
            except BaseException as exc:
                verdict, error = classify(exc, attempt, read=read, retried_read=retried_read)
                if verdict == "retry" and attempt < _ATTEMPTS:
                    retried_read = retried_read or isinstance(exc, psycopg.OperationalError)
                    continue
                if error is exc:
                    raise
                raise _named(op, self._q.schema, error, attempt) from (
                    exc if not isinstance(exc, UserCodeError) else None
                )
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _scope(self, conn: psycopg.AsyncConnection[Any], mode: Mode) -> AsyncIterator[None]:
        if mode == "statement":
            yield
        elif mode == "user-transaction":
            async with conn.transaction():
                yield
        else:
            async with _async_pipelined_transaction(conn):
                yield

    async def _drive(self, conn: psycopg.AsyncConnection[Any], gen: SqlGen[T], *, pipelined: bool) -> T:
        answer: Any = None
        while True:
            try:
                effect = gen.send(answer)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            answer = await self._perform(conn, effect, pipelined)

    async def _perform(self, conn: psycopg.AsyncConnection[Any], effect: SqlEffect, pipelined: bool) -> Any:
        if isinstance(effect, Rows):
            cur = await conn.cursor(row_factory=dict_row).execute(self._query(effect), effect.params)
            return await cur.fetchall()
        if isinstance(effect, Send):
            await conn.execute(self._q[effect.name], effect.params)
            return None
        if isinstance(effect, Raw):
            acur = await conn.cursor(row_factory=dict_row).execute(effect.statement, effect.params)
            return await acur.fetchall() if acur.description else []
        if isinstance(effect, RowsTogether):
            if pipelined:
                return [await self._perform(conn, read, pipelined) for read in effect.reads]
            async with conn.pipeline():
                cursors = [
                    await conn.cursor(row_factory=dict_row).execute(self._query(r), r.params)
                    for r in effect.reads
                ]
            return [await cur.fetchall() for cur in cursors]
        try:
            result = effect.fn(conn, *effect.args)
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            raise UserCodeError(exc) from exc

    def _query(self, effect: Rows) -> Any:
        return self._q.render(effect.name, effect.parts) if effect.parts else self._q[effect.name]


@contextlib.asynccontextmanager
async def _async_autocommit(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    if conn.autocommit:
        yield
        return
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            await conn.set_autocommit(False)


@contextlib.asynccontextmanager
async def _async_pipelined_transaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    try:
        async with conn.pipeline():
            await conn.execute(b"BEGIN")
            yield
            await conn.execute(b"COMMIT")
    except BaseException:
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                await conn.execute(b"ROLLBACK")
        raise
