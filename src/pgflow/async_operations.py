"""The client methods of SPEC §4 as coroutines: ``AsyncClient``, ``AsyncEngine`` and ``AsyncHarness``
mix them in.

The rules are those of :class:`~pgflow.operations.OperationSteps`, shared with the blocking
``Operations``: each method here awaits the store calls its generator yields, on the event loop —
no thread is held, and ``wait_for_run`` waits on the store's LISTEN hub (one connection feeds every
waiter). ``tests/test_async_api.py`` binds the two: same methods, same signatures.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, overload

from . import telemetry
from .definition import I, Workflow, WorkflowRef
from .durations import DurationLike
from .operations import OperationSteps, OpGen, still_waiting
from .records import TERMINAL, Event, Progress, RunPage, WorkflowRun
from .schedules import CatchUp, ScheduleInfo
from .static_steps import WorkflowInfo

__all__ = ["AsyncOperations", "drive_async"]

T = TypeVar("T")


async def drive_async(gen: OpGen[T], store_of: Callable[[], Awaitable[Any]]) -> T:
    """Run an operation, awaiting each store call (a blocking store's answers are taken as they
    come); the store is asked for at the first call, so bad arguments are reported first."""
    answer: Any = None
    store: Any = None
    while True:
        try:
            call = gen.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if store is None:
            store = await store_of()
        answer = call(store)
        if inspect.isawaitable(answer):
            answer = await answer


class AsyncOperations(OperationSteps):
    """The client methods as coroutines. A host provides ``async _ops_store()`` (migrating lazily)."""

    async def _ops_store(self) -> Any:
        raise NotImplementedError

    async def _do(self, gen: OpGen[T]) -> T:
        return await drive_async(gen, self._ops_store)

    @overload
    async def start_workflow(
        self, workflow: Workflow[I, Any] | WorkflowRef[I, Any], input: I | Mapping[str, Any] = ..., *,
        resource_id: str | None = None, idempotency_key: str | None = None,
        timeout: DurationLike | None = None, retries: int | None = None,
        concurrency_key: str | None = None, priority: int = 0,
    ) -> WorkflowRun: ...  # fmt: skip

    @overload
    async def start_workflow(
        self, workflow: str, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: DurationLike | None = None, retries: int | None = None,
        concurrency_key: str | None = None, priority: int = 0,
    ) -> WorkflowRun: ...  # fmt: skip

    async def start_workflow(
        self, workflow: Any, input: Any = None, *, resource_id: str | None = None,
        idempotency_key: str | None = None, timeout: Any = None, retries: int | None = None,
        concurrency_key: str | None = None, priority: int = 0,
    ) -> WorkflowRun:  # fmt: skip
        """Start a run; returns it ``pending`` (``Operations.start_workflow``)."""
        steps = self._start_workflow_steps(
            workflow, input, resource_id, idempotency_key, timeout, retries, concurrency_key, priority
        )
        with telemetry.starting(workflow) as started:  # current in this task only, across the awaits
            run = await self._do(steps)
            started(run)
        return run

    async def trigger_event(
        self, run_id: str, event: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        return await self._do(self._trigger_event_steps(run_id, event, data, resource_id))

    async def pause_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await self._do(self._change_steps(run_id, "pause", resource_id))

    async def resume_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await self._do(self._change_steps(run_id, "resume", resource_id))

    async def cancel_workflow(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await self._do(self._change_steps(run_id, "cancel", resource_id))

    async def fast_forward_workflow(
        self, run_id: str, data: Any = None, *, resource_id: str | None = None
    ) -> WorkflowRun:
        return await self._do(self._change_steps(run_id, "fast_forward", resource_id, data))

    async def retry_workflow(
        self, run_id: str, *, from_step: str | None = None, resource_id: str | None = None
    ) -> WorkflowRun:
        return await self._do(self._retry_workflow_steps(run_id, from_step, resource_id))

    async def get_run(self, run_id: str, *, resource_id: str | None = None) -> WorkflowRun:
        return await self._do(self._get_run_steps(run_id, resource_id))

    async def check_progress(self, run_id: str, *, resource_id: str | None = None) -> Progress:
        return await self._do(self._check_progress_steps(run_id, resource_id))

    async def get_runs(
        self, *, resource_id: str | None = None, workflow_id: str | None = None, statuses: Any = None,
        limit: int = 20, starting_after: str | None = None, ending_before: str | None = None,
    ) -> RunPage:  # fmt: skip
        steps = self._get_runs_steps(resource_id, workflow_id, statuses, limit, starting_after, ending_before)
        return await self._do(steps)

    async def wait_for_run(
        self, run_id: str, *, until: Any = TERMINAL, timeout: Any = "30s", resource_id: str | None = None
    ) -> WorkflowRun:
        """Wait (on the event loop, no thread) until the run's status is in ``until``; else
        ``TimeoutError``."""
        wanted, span = self._wait_arguments(run_id, until, timeout, resource_id)
        deadline = time.monotonic() + span.total_seconds()
        store = await self._ops_store()
        async with store.watch_run(run_id) as waiter:  # before the first read: no change missed
            while True:
                run = await self.get_run(run_id, resource_id=resource_id)
                left = deadline - time.monotonic()
                if not still_waiting(run, wanted, left):
                    return run
                await waiter.wait(left)

    async def count_runs(
        self, *, workflow_id: str | None = None, resource_id: str | None = None
    ) -> dict[str, int]:
        return await self._do(self._count_runs_steps(workflow_id, resource_id))

    async def list_workflows(self) -> list[WorkflowInfo]:
        return await self._do(self._list_workflows_steps())

    async def get_mailbox(self, run_id: str, *, resource_id: str | None = None) -> list[Event]:
        return await self._do(self._get_mailbox_steps(run_id, resource_id))

    async def get_child_runs(self, run_id: str, *, resource_id: str | None = None) -> list[WorkflowRun]:
        return await self._do(self._get_child_runs_steps(run_id, resource_id))

    async def prune(
        self, *, older_than: DurationLike, statuses: Any = TERMINAL, workflow_id: str | None = None,
        resource_id: str | None = None, dry_run: bool = False,
    ) -> int:  # fmt: skip
        """``Operations.prune``: each batch of at most 1,000 runs is awaited on its own."""
        return await self._do(self._prune_steps(older_than, statuses, workflow_id, resource_id, dry_run))

    # schedules (SPEC §16) -------------------------------------------------------------------------

    async def create_schedule(
        self, schedule_id: str, workflow: Workflow[Any, Any] | WorkflowRef[Any, Any] | str, cron: str, *,
        input: Any = None, timezone: str = "UTC", catch_up: CatchUp = "latest",
    ) -> ScheduleInfo:  # fmt: skip
        steps = self._create_schedule_steps(schedule_id, workflow, cron, input, timezone, catch_up)
        return await self._do(steps)

    async def get_schedule(self, schedule_id: str) -> ScheduleInfo:
        return await self._do(self._get_schedule_steps(schedule_id))

    async def list_schedules(self) -> list[ScheduleInfo]:
        return await self._do(self._list_schedules_steps())

    async def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        return await self._do(self._pause_schedule_steps(schedule_id, True))

    async def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        return await self._do(self._pause_schedule_steps(schedule_id, False))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._do(self._delete_schedule_steps(schedule_id))
