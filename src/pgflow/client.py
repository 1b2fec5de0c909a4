"""``Client`` (no workers) and ``AsyncClient`` (the same methods as coroutines, on the event loop)."""

from __future__ import annotations

from typing import Any

from .arguments import check_clock
from .async_operations import AsyncOperations
from .backend import AsyncBackend, Backend
from .clock import SystemClock
from .operations import Operations
from .store import Store

__all__ = ["AsyncClient", "Client"]


class Client(Operations):
    """Every client method of SPEC §4, no workers. Migrates lazily on first use."""

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, schema: str = "pgflow", clock: Any = None,
        prepare: bool = True, listen_dsn: str | None = None,
    ) -> None:  # fmt: skip
        self._backend = Backend(dsn, pool, schema, max_size=4, prepare=prepare, listen_dsn=listen_dsn)
        self._ops_clock = check_clock(clock) if clock is not None else SystemClock()

    def _ops_store(self) -> Store:
        store: Store = self._backend.store()
        return store

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(AsyncOperations):
    """``Client`` for asyncio apps, native: psycopg's async connections on an ``AsyncConnectionPool``
    (``pool=`` takes yours), every method a coroutine that holds no thread, and ``wait_for_run``
    waiting on one LISTEN connection per client that feeds every waiter. Migrates lazily."""

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, schema: str = "pgflow", clock: Any = None,
        prepare: bool = True, listen_dsn: str | None = None,
    ) -> None:  # fmt: skip
        self._backend = AsyncBackend(dsn, pool, schema, max_size=10, prepare=prepare, listen_dsn=listen_dsn)
        self._ops_clock = check_clock(clock) if clock is not None else SystemClock()

    async def _ops_store(self) -> Any:
        return await self._backend.store()

    async def close(self) -> None:
        await self._backend.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
