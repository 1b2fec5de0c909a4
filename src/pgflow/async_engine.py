"""``AsyncEngine``: the ``Engine`` on the event loop (SPEC §17).

Same options as ``Engine`` (``concurrency`` defaults to 100) and every client method as a coroutine.
Its worker runs on the loop that started it: ``async def`` steps are tasks there, sync ones run on a
bounded pool of threads (``concurrency`` of them at most, started on first use). The protocol, the
run rules and the client operations are the threaded engine's, shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import types
from collections.abc import Iterable, Mapping
from typing import Any

from .arguments import check_clock, check_int, shown
from .async_operations import AsyncOperations
from .async_processor import AsyncRunProcessor, StepThreads
from .async_worker import AsyncWorker
from .backend import AsyncBackend, Backend
from .clock import SystemClock
from .definition import Workflow, WorkflowRef, check_workflows
from .durations import check_duration, check_optional_duration
from .engine import MAX_CONCURRENCY, stop_seconds
from .errors import InvalidArgumentError, WorkflowDefinitionError
from .processor import Settings
from .retention import AsyncPruner
from .schedules import Schedule, check_schedules
from .store import RunRow

__all__ = ["AsyncEngine"]

log = logging.getLogger("pgflow.worker")
MAX_STEP_THREADS = 32  # sync step functions at once; async ones are not bounded by threads


class AsyncEngine(AsyncOperations):
    """Registers workflows, runs a worker on the event loop, and has every client method as a
    coroutine. ``async with AsyncEngine(...) as engine`` starts and stops it."""

    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, workflows: Iterable[Workflow] = (),
        schedules: Iterable[Schedule] = (), concurrency: int = 100, schema: str = "pgflow", lease: Any = "30s",
        min_poll_interval: Any = "1s", clock: Any = None, prepare: bool = True, listen_dsn: str | None = None,
        retention: Any = None,
    ) -> None:  # fmt: skip
        check_int(concurrency, "concurrency", 1, MAX_CONCURRENCY)
        self.retention = check_optional_duration(retention, "retention")  # SPEC §15: prune passes
        workflows = check_workflows(workflows)
        self._schedules = check_schedules(schedules)  # upserted at start (SPEC §16)
        self._backend = AsyncBackend(
            dsn, pool, schema, max_size=min(concurrency, 20) + 4, prepare=prepare, listen_dsn=listen_dsn
        )
        self._prepare = prepare
        self._ops_clock = check_clock(clock) if clock is not None else SystemClock()
        self.settings = Settings(
            check_duration(lease, "lease"), check_duration(min_poll_interval, "min_poll_interval")
        )
        self.concurrency = concurrency
        self._workflows: dict[str, Workflow] = {}
        self._registered: set[str] = set()
        self._worker: AsyncWorker | None = None
        self._threads = StepThreads(min(concurrency, MAX_STEP_THREADS))
        self._blocking: Backend | None = None
        self._abort = asyncio.Event()
        self._stopped = asyncio.Event()
        self._pruner: AsyncPruner | None = None
        for wf in workflows:
            self.register(wf)

    @property
    def clock(self) -> Any:
        return self._ops_clock

    @property
    def schema(self) -> str:
        return self._backend.schema

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        return types.MappingProxyType(self._workflows)

    # definitions ---------------------------------------------------------------------------------

    def register(self, workflow: Workflow) -> None:
        """Add a definition (before or after start; it is written to the database at the next store
        call). Same object again: no-op."""
        if not isinstance(workflow, Workflow):
            raise WorkflowDefinitionError(
                f"register() takes a Workflow (from @workflow), got {shown(workflow)}"
            )
        known = self._workflows.get(workflow.id)
        if known is workflow:
            return
        if known is not None:
            raise WorkflowDefinitionError(f"another workflow is already registered with id {workflow.id!r}")
        self._workflows[workflow.id] = workflow

    async def _ops_store(self) -> Any:
        store = await self._backend.store()
        for wf in [wf for wid, wf in self._workflows.items() if wid not in self._registered]:
            self._registered.add(wf.id)
            await store.register_workflow(wf.id, wf.steps, self._now(), wf.settings)
        return store

    def _ops_workflows(self) -> Mapping[str, Workflow]:
        return self._workflows

    def _ops_started(self, run: RunRow) -> None:
        if self._worker is not None:
            self._worker.nudge()

    async def _resolve(self, target: Any) -> Workflow | WorkflowRef:
        if not isinstance(target, str):
            return target  # type: ignore[no-any-return]
        return await self._do(self._target_steps(target))

    async def _blocking_store(self) -> Any:
        """A blocking store on the same database, for sync ``Transaction`` functions (they are given
        a blocking connection), opened on first use."""
        if self._blocking is None:
            dsn = self._backend.dsn()
            self._blocking = Backend(dsn, None, self.schema, max_size=4, prepare=self._prepare)
        return await asyncio.to_thread(self._blocking.store)

    # lifecycle -------------------------------------------------------------------------------------

    async def start(self, worker: bool = True) -> AsyncEngine:
        """Migrate, register workflows and (unless ``worker=False``) start the worker on this loop."""
        if not isinstance(worker, bool):
            raise InvalidArgumentError(f"worker must be True or False, got {shown(worker)}")
        store = await self._ops_store()
        await self._do(self._put_schedules_steps(self._schedules))
        if worker and self._worker is None:
            self._stopped.clear()
            self._abort.clear()
            stopping = asyncio.Event()
            processor = AsyncRunProcessor(
                store, self._workflows, self._ops_clock, self.settings, self._threads,
                resolve=self._resolve, stopping=stopping, blocking_store=self._blocking_store,
            )  # fmt: skip
            self._worker = AsyncWorker(
                store, self._workflows, processor, self.settings, self.concurrency, self._ops_clock, stopping
            )
            await self._worker.start()
            if self.retention is not None:  # the worker prunes, in a task of its own on this loop
                self._pruner = AsyncPruner(self, self.retention, self._ops_store)
                self._pruner.start()
        return self

    async def stop(self, timeout: Any = "30s") -> None:
        """Finish in-flight steps (for at most ``timeout``, a duration), then cancel what still runs
        (its run is left to its lease) and close the pool."""
        seconds = stop_seconds(timeout, "timeout")
        worker, self._worker = self._worker, None
        pruner, self._pruner = self._pruner, None
        try:
            if pruner is not None:
                await pruner.stop()
            if worker is not None:
                await worker.stop(seconds, self._abort)
        finally:
            self._stopped.set()
            self._threads.close()
            if self._blocking is not None:
                await asyncio.to_thread(self._blocking.close)
                self._blocking = None
            await self._backend.close()

    async def run_worker(self, *, shutdown_timeout: Any = "30s") -> None:
        """Run the worker until SIGINT/SIGTERM (or cancellation), then stop gracefully: in-flight
        steps get up to ``shutdown_timeout``; a second signal stops at once."""
        seconds = stop_seconds(shutdown_timeout, "shutdown_timeout")
        await self.start(worker=True)
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        signals: list[int] = []

        def on_signal(signum: int) -> None:
            signals.append(signum)
            if len(signals) > 1:
                self._abort.set()  # the second signal: stop waiting for in-flight steps
            asked.set()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(
                    [asyncio.ensure_future(asked.wait()), asyncio.ensure_future(self._stopped.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if signals:
                log.info("received %s: stopping gracefully (up to %gs for in-flight steps); "
                         "send it again to stop at once", signal.Signals(signals[0]).name, seconds)  # fmt: skip
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop(seconds)

    async def close(self) -> None:
        await self.stop()

    async def __aenter__(self) -> AsyncEngine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
