"""``Client`` (no workers) and ``AsyncClient`` (the same methods as coroutines)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from typing import Any

from .backend import Backend
from .clock import SystemClock
from .operations import Operations, Waiter
from .records import TERMINAL, Progress, RunPage, WorkflowRun
from .store import Store
from .watch import watch_run

__all__ = ["AsyncClient", "Client"]


class Client(Operations):
    """Every client method of SPEC §4, no workers. Migrates lazily on first use."""

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, schema: str = "pgflow", clock: Any = None
    ) -> None:
        self._backend = Backend(dsn, pool, schema, max_size=4)
        self._ops_clock = clock if clock is not None else SystemClock()

    def _ops_store(self) -> Store:
        store: Store = self._backend.store()
        return store

    def _ops_watch(self, run_id: str) -> AbstractContextManager[Waiter]:
        return watch_run(self._backend, run_id)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """``Client`` for asyncio apps: each method runs the blocking client in a worker thread, so one
    implementation serves both (no async twin to keep in step)."""

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, schema: str = "pgflow", clock: Any = None
    ) -> None:
        self._client = Client(dsn, pool=pool, schema=schema, clock=clock)

    async def start_workflow(self, workflow: Any, input: Any = None, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.start_workflow, workflow, input, **kwargs)

    async def trigger_event(self, run_id: str, event: str, data: Any = None, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.trigger_event, run_id, event, data, **kwargs)

    async def pause_workflow(self, run_id: str, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.pause_workflow, run_id, **kwargs)

    async def resume_workflow(self, run_id: str, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.resume_workflow, run_id, **kwargs)

    async def cancel_workflow(self, run_id: str, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.cancel_workflow, run_id, **kwargs)

    async def fast_forward_workflow(self, run_id: str, data: Any = None, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.fast_forward_workflow, run_id, data, **kwargs)

    async def get_run(self, run_id: str, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.get_run, run_id, **kwargs)

    async def check_progress(self, run_id: str, **kwargs: Any) -> Progress:
        return await asyncio.to_thread(self._client.check_progress, run_id, **kwargs)

    async def get_runs(self, **kwargs: Any) -> RunPage:
        return await asyncio.to_thread(self._client.get_runs, **kwargs)

    async def wait_for_run(self, run_id: str, *, until: Any = TERMINAL, **kwargs: Any) -> WorkflowRun:
        return await asyncio.to_thread(self._client.wait_for_run, run_id, until=until, **kwargs)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
