"""``AsyncRunProcessor``: the asyncio driver of the worker protocol (``protocol.py``).

The same protocol generator the threaded ``RunProcessor`` and the harness drive, performed on the
event loop: ``async def`` step functions run as tasks on the loop (an ``All`` of them concurrently,
no thread per step), sync ones on a bounded pool of daemon threads; store calls are awaited (an
asyncio store) or taken as they come (the in-memory store of ``AsyncHarness``). An ``async def``
``Transaction`` function runs on the asyncio store's ``AsyncConnection``; a sync one needs a blocking
connection, so its commit goes through a blocking store in a thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import protocol, telemetry
from .async_operations import drive_async
from .definition import Workflow, WorkflowRef
from .errors import StepTimeoutError
from .execution import is_async
from .operations import run_defaults
from .processor import Settings
from .protocol import (
    Call,
    CallSteps,
    ChildPlan,
    Commit,
    Effect,
    Env,
    Faults,
    Raised,
    Reload,
    ResolveChild,
    Returned,
)
from .store import Claimed, CommitResult
from .threads import DaemonPool

if TYPE_CHECKING:
    from .telemetry.otel import RunTelemetry

__all__ = ["AsyncRunProcessor", "drive_protocol"]


async def drive_protocol(gen: protocol.Gen, handle: Callable[[Effect], Awaitable[Any]]) -> Any:
    """``processor.drive`` on the event loop: each effect awaited, its exception thrown back."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            effect = gen.throw(error) if error is not None else gen.send(result)
        except StopIteration as stop:
            return stop.value
        result, error = None, None
        try:
            result = await handle(effect)
        except Exception as exc:
            error = exc


async def settle(value: Any) -> Any:
    """A store call's answer: awaited when the store is asynchronous."""
    return await value if inspect.isawaitable(value) else value


class StepThreads:
    """The bounded pool of daemon threads where sync step functions run, started on first use."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pool: DaemonPool | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a pool thread, in a copy of the caller's context (as ``asyncio.to_thread``:
        the step's span, and any context variable, is current there too)."""
        if self._pool is None:
            self._pool = DaemonPool(self._size, "pgflow-step")
        context = contextvars.copy_context()
        return await asyncio.wrap_future(self._pool.call(context.run, fn, *args))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class AsyncRunProcessor:
    """Executes claimed runs on the event loop, one task per run."""

    def __init__(
        self, store: Any, workflows: Mapping[str, Workflow], clock: Any, settings: Settings,
        threads: StepThreads, *, faults: Faults | None = None,
        resolve: Callable[[Any], Awaitable[Workflow | WorkflowRef]] | None = None,
        stopping: asyncio.Event | None = None, blocking_store: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.workflows = workflows
        self.clock = clock
        self.settings = settings
        self.threads = threads
        self.faults = faults if faults is not None else Faults()
        self.resolve = resolve
        self.stopping = stopping
        self._blocking_store = blocking_store  # for sync Transaction functions (a blocking connection)
        self.env = Env(
            workflows, clock, settings.lease, settings.min_poll_interval, store.supports_transactions,
            self.faults, self._is_stopping,
        )  # fmt: skip

    def _is_stopping(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    async def process(self, claimed: Claimed) -> None:
        """``RunProcessor.process`` on the event loop."""
        traced = telemetry.for_run(claimed)
        handle = self._handle if traced is None else functools.partial(self._handle_traced, traced)
        await drive_protocol(protocol.process(claimed, self.env), handle)

    async def _handle(self, effect: Effect) -> Any:
        if isinstance(effect, Commit):
            return await self._commit(effect)
        if isinstance(effect, CallSteps):
            return await asyncio.gather(*(self._call_one(call) for call in effect.calls))
        if isinstance(effect, Reload):
            return await settle(self.store.reload(effect.lease))
        assert isinstance(effect, ResolveChild)
        return await self._plan_child(effect.workflow)

    async def _handle_traced(self, traced: RunTelemetry, effect: Effect) -> Any:
        """``_handle`` with the run's telemetry (``RunProcessor._handle_traced``)."""
        if isinstance(effect, CallSteps):
            return await asyncio.gather(*(self._call_one(call, traced) for call in effect.calls))
        if isinstance(effect, Commit):
            with traced.transaction(effect.transaction):
                result = await self._commit(effect)
            traced.committed(effect.batch.outcome, result)
            return result
        if isinstance(effect, ResolveChild) and effect.step is not None:
            with traced.step(effect.step):
                plan = await self._plan_child(effect.workflow)
                return attrs.evolve(plan, trace_context=traced.carrier())
        return await self._handle(effect)

    async def _commit(self, effect: Commit) -> CommitResult:
        args = (effect.lease, effect.now, self.settings.lease, effect.batch, effect.transaction)
        if effect.transaction is not None and not is_async(effect.transaction[0].fn) and self._blocking_store:
            blocking = await self._blocking_store()
            result: CommitResult = await self.threads.run(blocking.commit, *args)
            return result
        return await settle(self.store.commit(*args))  # type: ignore[no-any-return]

    async def _call_one(self, call: Call, traced: RunTelemetry | None = None) -> Returned | Raised:
        try:
            if traced is None or call.step is None:
                return Returned(await self._call(call))
            with traced.step(call.step):
                return Returned(await self._call(call))
        except Exception as exc:
            return Raised(exc)

    async def _call(self, call: Call) -> Any:
        if is_async(call.fn):
            work: Awaitable[Any] = call.fn(*call.args)
        else:
            work = self.threads.run(_call_and_wait, call.fn, call.args)
        try:
            return await asyncio.wait_for(work, call.timeout)
        except TimeoutError:
            raise StepTimeoutError(f"{call.what} timed out after {call.timeout:g}s") from None

    async def _plan_child(self, workflow: Any) -> ChildPlan:
        target = await self.resolve(workflow) if self.resolve else workflow
        definition = self.workflows.get(target.id, target)
        retries, span, backoff = await drive_async(run_defaults(definition, None, None), self._store)
        return ChildPlan(target, retries, span, backoff)

    async def _store(self) -> Any:
        return self.store


def _call_and_wait(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """A sync step function in its thread; one that returns an awaitable (a sync wrapper of an async
    function) has it run to completion there."""
    result = fn(*args)
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
