"""Drive an asyncio store from blocking test code: the contract suite's third store.

:class:`BlockingBridge` runs each coroutine method of an :class:`AsyncPostgresStore` on an event
loop thread of its own and waits for the answer, so the very tests that pin ``MemoryStore`` and
``PostgresStore`` pin the asyncio store too (same calls, same assertions).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgflow.postgres.async_store import AsyncPostgresStore


class BlockingBridge:
    """The blocking face of an ``AsyncPostgresStore`` whose pool lives on the bridge's own loop."""

    def __init__(self, dsn: str, schema: str, *, max_size: int = 4) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bridge-loop", daemon=True)
        self._thread.start()
        self._pool: AsyncConnectionPool[Any] = self.call(_open_pool(dsn, max_size))
        self.store = AsyncPostgresStore(self._pool, schema=schema)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr) or name == "watch_run":
            return attr
        return self._blocking(attr)

    def _blocking(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            return self.call(result) if asyncio.iscoroutine(result) else result

        return call

    @contextlib.contextmanager
    def watch_run(self, run_id: str) -> Iterator[_Waiter]:
        manager = self.store.watch_run(run_id)
        waiter = self.call(manager.__aenter__())
        try:
            yield _Waiter(self, waiter)
        finally:
            self.call(manager.__aexit__(None, None, None))

    def shutdown(self) -> None:
        self.call(self.store.close())
        self.call(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class _Waiter:
    def __init__(self, bridge: BlockingBridge, waiter: Any) -> None:
        self._bridge, self._waiter = bridge, waiter

    def wait(self, timeout: float) -> bool:
        return bool(self._bridge.call(self._waiter.wait(timeout)))


async def _open_pool(dsn: str, max_size: int) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    return pool
