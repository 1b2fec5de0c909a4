"""``AsyncHarness``: the ``Harness`` with coroutine methods, for asyncio applications' tests.

The same simulated-time loops and client operations as ``Harness`` (``HarnessSteps``), awaited; runs
are processed by the asyncio driver of the worker protocol on the test's own event loop, so
``async def`` step functions run there (with the test's loop-bound clients and fixtures). In memory by
default; ``dsn=`` puts it on PostgreSQL through the asyncio store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from ..async_operations import AsyncOperations
from ..async_processor import AsyncRunProcessor, StepThreads
from ..definition import Workflow, WorkflowRef
from ..memory import MemoryStore
from ..processor import Crash
from ..records import TERMINAL, WorkflowRun
from ..store import Claimed
from . import HarnessSteps, SimClock

__all__ = ["AsyncHarness"]


class AsyncHarness(HarnessSteps, AsyncOperations):
    """Every client method and ``run_until_idle``, ``advance``, ``run_until_complete``,
    ``wait_for_run`` as coroutines; ``crash_before`` / ``crash_after`` as in ``Harness``. Use
    ``async with AsyncHarness(...) as h`` (or ``await h.close()``)."""

    def __init__(
        self,
        workflows: Iterable[Workflow] = (),
        *,
        dsn: str | None = None,
        schema: str = "pgflow",
        clock: SimClock | None = None,
        lease: Any = "30s",
        min_poll_interval: Any = "1s",
    ) -> None:
        found = self._setup(workflows, dsn, schema, clock, lease, min_poll_interval)
        self._dsn, self._schema = dsn, schema
        self.store: Any = MemoryStore() if dsn is None else None  # Postgres: opened on first use
        self._pool: Any = None
        self._blocking: Any = None
        self._registered: set[str] = set()
        self._threads = StepThreads(8)
        self._processor: AsyncRunProcessor | None = None
        for wf in found:
            self.register(wf)

    def register(self, workflow: Workflow) -> None:
        """Add a definition; it is written to the store at the next call."""
        self._add_workflow(workflow)

    async def _ops_store(self) -> Any:
        if self.store is None:
            from psycopg_pool import AsyncConnectionPool

            from ..postgres.async_store import AsyncPostgresStore

            self._pool = AsyncConnectionPool(
                self._dsn or "", min_size=1, max_size=4, open=False, kwargs={"autocommit": True}
            )
            await self._pool.open(wait=True)
            store = AsyncPostgresStore(self._pool, self._schema)
            await store.migrate()
            self.store = store
        for wf in [wf for wid, wf in self._workflows.items() if wid not in self._registered]:
            self._registered.add(wf.id)
            done = self.store.register_workflow(wf.id, wf.steps, self.clock.now(), wf.settings)
            if asyncio.iscoroutine(done):
                await done
        return self.store

    async def _resolve(self, target: Any) -> Workflow | WorkflowRef:
        if not isinstance(target, str):
            return target  # type: ignore[no-any-return]
        return await self._do(self._target_steps(target))

    async def _blocking_store(self) -> Any:
        """A blocking store on the same database, for sync ``Transaction`` functions."""
        if self._blocking is None:
            from psycopg_pool import ConnectionPool

            from ..postgres import PostgresStore

            dsn = self._dsn or ""

            def open_pool() -> ConnectionPool[Any]:
                return ConnectionPool(dsn, min_size=1, max_size=2, open=True, kwargs={"autocommit": True})

            pool = await asyncio.to_thread(open_pool)
            self._blocking = (pool, PostgresStore(pool, self._schema))
        return self._blocking[1]

    async def _process_one(self, item: Claimed) -> None:
        if self._processor is None:
            self._processor = AsyncRunProcessor(
                self.store, self._workflows, self.clock, self._settings, self._threads, faults=self._faults,
                resolve=self._resolve, blocking_store=self._blocking_store if self._dsn else None,
            )  # fmt: skip
        with contextlib.suppress(Crash):  # after a Crash the run stays leased, as after a real crash
            await self._processor.process(item)

    # driving ---------------------------------------------------------------------------------

    async def run_until_idle(self, max_rounds: int = 100_000) -> None:
        """Execute all work that is ready at the current simulated time."""
        await self._do(self._run_until_idle_steps(max_rounds))

    async def advance(self, duration: Any) -> None:
        """Move the clock by ``duration``, firing each due timer at its own time."""
        await self._do(self._advance_steps(duration))

    async def run_until_complete(self, run_id: str, max_steps: int = 10_000) -> WorkflowRun:
        """Skip from timer to timer until the run is terminal; raise if it waits on something external."""
        return await self._do(self._run_until_complete_steps(run_id, max_steps))

    async def wait_for_run(
        self, run_id: str, *, until: Any = TERMINAL, timeout: Any = "30s", resource_id: str | None = None
    ) -> WorkflowRun:
        """Like the client's, in simulated time: runs work and timers up to ``timeout`` from now."""
        return await self._do(self._wait_steps(run_id, until, timeout, resource_id))

    async def close(self) -> None:
        self._threads.close()
        if self._blocking is not None:
            pool, store = self._blocking
            store.close()
            await asyncio.to_thread(pool.close)
            self._blocking = None
        if self._pool is not None:
            await self.store.close()
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> AsyncHarness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
