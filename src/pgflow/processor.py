"""``RunProcessor``: the blocking driver of the worker protocol (``protocol.py``).

The engine's worker threads and the test harness both hand claimed runs to ``RunProcessor.process``,
which performs the protocol's effects with blocking calls: the store's methods, and step functions
through a :class:`~pgflow.execution.StepCaller` (several at once, for an ``All``, on threads).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import pendulum

from . import protocol, telemetry
from .definition import Workflow, WorkflowRef
from .execution import StepCaller
from .operations import drive as drive_operation
from .operations import run_defaults
from .protocol import (
    Call,
    CallSteps,
    ChildPlan,
    Commit,
    Crash,
    Effect,
    Env,
    Faults,
    Raised,
    Reload,
    ResolveChild,
    Returned,
)
from .store import Claimed, Store
from .threads import map_in_threads

if TYPE_CHECKING:
    from .telemetry.otel import RunTelemetry

__all__ = ["Crash", "Faults", "RunProcessor", "Settings", "drive"]


@attrs.frozen
class Settings:
    lease: pendulum.Duration
    min_poll_interval: pendulum.Duration


def drive(gen: protocol.Gen, handle: Callable[[Effect], Any]) -> Any:
    """Run a protocol generator to its end, performing each effect with ``handle``; an exception
    from ``handle`` is thrown back into the generator at the effect (which decides what it means)."""
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            effect = gen.throw(error) if error is not None else gen.send(result)
        except StopIteration as stop:
            return stop.value
        result, error = None, None
        try:
            result = handle(effect)
        except Exception as exc:
            error = exc


class RunProcessor:
    """Executes claimed runs with blocking I/O: one run at a time per calling thread."""

    def __init__(
        self,
        store: Store,
        workflows: Mapping[str, Workflow],
        clock: Any,
        settings: Settings,
        caller: StepCaller,
        faults: Faults | None = None,
        resolve: Callable[[Any], Workflow | WorkflowRef] | None = None,
        stopping: Any = None,
    ) -> None:
        self.store = store
        self.workflows = workflows
        self.clock = clock
        self.settings = settings
        self.caller = caller
        self.faults = faults if faults is not None else Faults()
        self.resolve = resolve
        self.stopping = stopping  # a threading.Event: set on graceful stop
        self.env = Env(
            workflows, clock, settings.lease, settings.min_poll_interval, store.supports_transactions,
            self.faults, self._is_stopping,
        )  # fmt: skip

    def _is_stopping(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    def process(self, claimed: Claimed) -> None:
        """Drive the run until it suspends, ends, is released or loses its lease. A ``StorageError``
        propagates (the run is left to its lease); a ``Crash`` (fault injection) too."""
        traced = telemetry.for_run(claimed)
        handle = self._handle if traced is None else functools.partial(self._handle_traced, traced)
        drive(protocol.process(claimed, self.env), handle)

    # effects -----------------------------------------------------------------------------------

    def _handle(self, effect: Effect) -> Any:
        if isinstance(effect, Commit):
            return self.store.commit(
                effect.lease, effect.now, self.settings.lease, effect.batch, effect.transaction
            )
        if isinstance(effect, CallSteps):
            return self._call_all(effect.calls)
        if isinstance(effect, Reload):
            return self.store.reload(effect.lease)
        assert isinstance(effect, ResolveChild)
        return self._plan_child(effect.workflow)

    def _handle_traced(self, traced: RunTelemetry, effect: Effect) -> Any:
        """``_handle`` with the run's telemetry: a span around each step execution (a call, a
        Transaction step's commit, a Child step's start), runs counted when their end commits."""
        if isinstance(effect, CallSteps):
            return self._call_all(effect.calls, traced)
        if isinstance(effect, Commit):
            with traced.transaction(effect.transaction):
                result = self._handle(effect)
            traced.committed(effect.batch.outcome, result)
            return result
        if isinstance(effect, ResolveChild) and effect.step is not None:
            with traced.step(effect.step):
                return attrs.evolve(self._plan_child(effect.workflow), trace_context=traced.carrier())
        return self._handle(effect)

    def _call_one(self, call: Call, traced: RunTelemetry | None = None) -> Returned | Raised:
        try:
            if traced is None or call.step is None:
                return Returned(self.caller.call(call.fn, call.args, call.timeout, call.what))
            with traced.step(call.step):
                return Returned(self.caller.call(call.fn, call.args, call.timeout, call.what))
        except Exception as exc:
            return Raised(exc)

    def _call_all(
        self, calls: tuple[Call, ...], traced: RunTelemetry | None = None
    ) -> list[Returned | Raised]:
        """One call in this thread; several (an ``All``) concurrently, each on its own thread."""
        if len(calls) == 1:
            return [self._call_one(calls[0], traced)]
        return map_in_threads(functools.partial(self._call_one, traced=traced), calls, name="pgflow-all")

    def _plan_child(self, workflow: Any) -> ChildPlan:
        target = self.resolve(workflow) if self.resolve else workflow
        definition = self.workflows.get(target.id, target)
        retries, span, backoff = drive_operation(run_defaults(definition, None, None), lambda: self.store)
        return ChildPlan(target, retries, span, backoff)
