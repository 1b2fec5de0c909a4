"""``Client`` (no workers) and ``AsyncClient`` (the same methods as coroutines)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, overload

from .arguments import check_clock
from .backend import Backend
from .clock import SystemClock
from .definition import I, Workflow, WorkflowRef
from .durations import DurationLike
from .operations import Operations
from .records import TERMINAL, Event, Progress, RunPage, WorkflowRun
from .static_steps import WorkflowInfo
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


class AsyncClient:
    """``Client`` for asyncio apps: each method runs the blocking client in a worker thread, so one
    implementation serves both (no async twin to keep in step)."""

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, schema: str = "pgflow", clock: Any = None,
        prepare: bool = True, listen_dsn: str | None = None,
    ) -> None:  # fmt: skip
        self._client = Client(
            dsn, pool=pool, schema=schema, clock=clock, prepare=prepare, listen_dsn=listen_dsn
        )

    @overload
    async def start_workflow(
        self, workflow: Workflow[I, Any] | WorkflowRef[I, Any], input: I | Mapping[str, Any] = ..., *,
        resource_id: str | None = None, idempotency_key: str | None = None,
        timeout: DurationLike | None = None, retries: int | None = None,
    ) -> WorkflowRun: ...  # fmt: skip

    @overload
    async def start_workflow(
        self, workflow: str, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: DurationLike | None = None, retries: int | None = None,
    ) -> WorkflowRun: ...  # fmt: skip

    async def start_workflow(
        self, workflow: Any, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: Any = None, retries: int | None = None,
    ) -> WorkflowRun:  # fmt: skip
        return await asyncio.to_thread(
            self._client.start_workflow, workflow, input, resource_id=resource_id,
            idempotency_key=idempotency_key, timeout=timeout, retries=retries,
        )  # fmt: skip

    async def trigger_event(
        self, run_id: str, event: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        return await asyncio.to_thread(
            self._client.trigger_event, run_id, event, data, resource_id=resource_id
        )

    async def pause_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await asyncio.to_thread(self._client.pause_workflow, run_id, resource_id=resource_id)

    async def resume_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await asyncio.to_thread(self._client.resume_workflow, run_id, resource_id=resource_id)

    async def cancel_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await asyncio.to_thread(self._client.cancel_workflow, run_id, resource_id=resource_id)

    async def fast_forward_workflow(
        self, run_id: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        return await asyncio.to_thread(
            self._client.fast_forward_workflow, run_id, data, resource_id=resource_id
        )

    async def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await asyncio.to_thread(self._client.get_run, run_id, resource_id=resource_id)

    async def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        return await asyncio.to_thread(self._client.check_progress, run_id, resource_id=resource_id)

    async def get_runs(
        self, *, resource_id: str | None = None, workflow_id: str | None = None, statuses: Any = None,
        limit: int = 20, starting_after: str | None = None, ending_before: str | None = None,
    ) -> RunPage:  # fmt: skip
        return await asyncio.to_thread(
            self._client.get_runs, resource_id=resource_id, workflow_id=workflow_id, statuses=statuses,
            limit=limit, starting_after=starting_after, ending_before=ending_before,
        )  # fmt: skip

    async def wait_for_run(
        self, run_id: str, *, until: Any = TERMINAL, timeout: Any = "30s", resource_id: str | None = None
    ) -> WorkflowRun:
        return await asyncio.to_thread(
            self._client.wait_for_run, run_id, until=until, timeout=timeout, resource_id=resource_id
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # reads for the dashboard --------------------------------------------------------------------------

    async def count_runs(
        self, *, workflow_id: str | None = None, resource_id: str | None = None
    ) -> dict[str, int]:
        return await asyncio.to_thread(
            self._client.count_runs, workflow_id=workflow_id, resource_id=resource_id
        )

    async def list_workflows(self) -> list[WorkflowInfo]:
        return await asyncio.to_thread(self._client.list_workflows)

    async def get_mailbox(self, run_id: str, *, resource_id: str | None = None) -> list[Event]:
        return await asyncio.to_thread(self._client.get_mailbox, run_id, resource_id=resource_id)

    async def get_child_runs(self, run_id: str, *, resource_id: str | None = None) -> list[WorkflowRun]:
        return await asyncio.to_thread(self._client.get_child_runs, run_id, resource_id=resource_id)

    # re-driving a failed or cancelled run ---------------------------------------------------------------

    async def retry_workflow(
        self, run_id: str, *, from_step: str | None = None, resource_id: str | None = None
    ) -> WorkflowRun:
        return await asyncio.to_thread(
            self._client.retry_workflow, run_id, from_step=from_step, resource_id=resource_id
        )
