"""What pgflow traces and counts through the OpenTelemetry API (imported only when it is installed).

Spans (instrumentation scope ``pgflow``, from the global tracer provider):

- ``pgflow.start_workflow`` (PRODUCER) around a client's ``start_workflow``; the W3C context current
  inside it is stored with the run (``runs.trace_context``);
- ``pgflow.step`` (CONSUMER) around each step execution in a worker — a ``Run``/``Poll`` call, a
  ``Transaction`` step's commit, the start of a ``Child`` run — current while the step's code runs.
  Its parent is the stored context when the worker claimed the run within :data:`CHILD_WINDOW` of
  its start; a later claim (a run that slept, waited, was paused, or was retried) makes each step
  span the root of a new trace, linked to the stored context. A child run stores the context of
  its ``Child`` step's span.

Metrics (meter ``pgflow``, from the global meter provider): ``pgflow.steps`` and
``pgflow.step.duration`` per step execution (``status``: ``completed``, or ``failed`` when it raised),
``pgflow.runs`` when a worker commits a run's end (``completed``, ``failed``) or a client cancels one,
``pgflow.claim.delay`` from a run being claimable to a worker claiming it.

While no SDK provider is set (checked at each start and each claim) nothing is traced or counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from importlib import metadata
from types import TracebackType
from typing import Any

import pendulum
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ..definition import Workflow, WorkflowRef
from ..records import StepRecord, WorkflowRun
from ..store import Claimed, CommitResult, CompleteRun, FailRun, RunOutcome

__all__ = ["CHILD_WINDOW", "SCOPE", "Otel", "RunTelemetry"]

SCOPE = "pgflow"
CHILD_WINDOW = pendulum.duration(minutes=15)  # claimed later than this after its start: linked, not a child
_W3C = TraceContextTextMapPropagator()
_ROOT = Context()  # an empty context: a span started in it is the root of a new trace
# seconds: from a fast step to an hour-long one (the API's default buckets are made for milliseconds)
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_NOTHING = nullcontext()


def _ignore(run: WorkflowRun) -> None:
    pass


_UNTRACED_START = nullcontext(_ignore)


def _version() -> str | None:
    try:
        return metadata.version("pgflow-engine")
    except metadata.PackageNotFoundError:
        return None


class _Instruments:
    def __init__(self, meter: metrics.Meter) -> None:
        self.steps = meter.create_counter(
            "pgflow.steps", unit="{step}", description="Step executions, by workflow and status"
        )
        self.runs = meter.create_counter(
            "pgflow.runs", unit="{run}", description="Runs that ended, by workflow and status"
        )
        self.step_duration = meter.create_histogram(
            "pgflow.step.duration", unit="s", description="How long a step execution took",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )  # fmt: skip
        self.claim_delay = meter.create_histogram(
            "pgflow.claim.delay", unit="s", description="From a run being due to a worker claiming it",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )  # fmt: skip


class Otel:
    """The tracer and the instruments, taken from the global providers (again when they change)."""

    def __init__(self) -> None:
        self._version = _version()
        self._tracing: tuple[object, trace.Tracer] | None = None
        self._metering: tuple[object, _Instruments] | None = None

    def tracer(self) -> trace.Tracer:
        provider = trace.get_tracer_provider()
        found = self._tracing
        if found is None or found[0] is not provider:
            found = self._tracing = (provider, provider.get_tracer(SCOPE, self._version))
        return found[1]

    def instruments(self) -> _Instruments:
        provider = metrics.get_meter_provider()
        found = self._metering
        if found is None or found[0] is not provider:
            found = self._metering = (provider, _Instruments(provider.get_meter(SCOPE, self._version)))
        return found[1]

    # the client side ------------------------------------------------------------------------------

    def tracing(self) -> bool:
        """Whether an SDK's tracer provider is set (else the API's spans would only cost time)."""
        return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    def starting(self, workflow: object) -> AbstractContextManager[Callable[[WorkflowRun], None]]:
        return self._starting(workflow) if self.tracing() else _UNTRACED_START

    @contextmanager
    def _starting(self, workflow: object) -> Iterator[Callable[[WorkflowRun], None]]:
        wid = workflow.id if isinstance(workflow, Workflow | WorkflowRef) else workflow
        attributes = {"pgflow.workflow_id": wid} if isinstance(wid, str) else None
        with self.tracer().start_as_current_span(
            "pgflow.start_workflow", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:

            def started(run: WorkflowRun) -> None:
                span.set_attribute("pgflow.run_id", run.id)

            yield started

    def carrier(self) -> dict[str, str] | None:
        found: dict[str, str] = {}
        _W3C.inject(found)
        return found or None

    def cancelled(self, run: WorkflowRun) -> None:
        self.instruments().runs.add(1, {"pgflow.workflow_id": run.workflow_id, "status": "cancelled"})

    # the worker side ------------------------------------------------------------------------------

    def metering(self) -> bool:
        """Whether a meter provider is set: the API hands out its proxy until then (a private class,
        so this is checked by name; should it change, pgflow counts into the no-op proxy instead)."""
        return type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"

    def for_run(self, claimed: Claimed) -> RunTelemetry | None:
        """The run's telemetry; None when no provider is set (the driver's untraced path)."""
        run = claimed.run
        tracing = self.tracing()
        if not tracing and not self.metering():
            return None
        parent, links = _origin(claimed) if tracing else (_ROOT, None)
        traced = RunTelemetry(
            self.tracer() if tracing else None, self.instruments(), run.id, run.workflow_id, parent, links
        )
        if claimed.due is not None:  # the claim wrote its time in updated_at
            delay = max(_seconds(run.updated_at, claimed.due), 0.0)
            traced.instruments.claim_delay.record(delay, traced.workflow)
        return traced


def _seconds(later: datetime, earlier: datetime) -> float:
    """``later - earlier`` in seconds, with the stdlib's subtraction (pendulum's is ~10 µs)."""
    return datetime.__sub__(later, earlier).total_seconds()


def _origin(claimed: Claimed) -> tuple[Context, Sequence[Link] | None]:
    """The parent of the run's step spans, or a root with a link (see the module doc)."""
    run = claimed.run
    if not run.trace_context:
        return _ROOT, None
    stored = _W3C.extract(run.trace_context)
    span_context = trace.get_current_span(stored).get_span_context()
    if not span_context.is_valid:
        return _ROOT, None
    if _seconds(run.updated_at, run.created_at) <= CHILD_WINDOW.total_seconds():
        return stored, None
    return _ROOT, (Link(span_context, {"pgflow.link": "start_workflow"}),)


class RunTelemetry:
    """The spans and counts of one claimed run, for the driver that processes it. Decided per claim:
    spans when a tracer provider is set, metrics always (no-ops until a meter provider is set), and
    no RunTelemetry at all when neither is (the API's no-ops would only cost the hot path time)."""

    def __init__(
        self, tracer: trace.Tracer | None, instruments: _Instruments, run_id: str, workflow_id: str,
        parent: Context, links: Sequence[Link] | None,
    ) -> None:  # fmt: skip
        self._tracer = tracer  # None: no tracer provider is set
        self.instruments = instruments  # taken once per claim: the hot path asks no provider again
        self._run_id = run_id
        self.workflow = {"pgflow.workflow_id": workflow_id}
        self._parent = parent
        self._links = links
        self._counted = {
            status: {"pgflow.workflow_id": workflow_id, "status": status}
            for status in ("completed", "failed")
        }

    def step(self, record: StepRecord) -> AbstractContextManager[None]:
        """The ``pgflow.step`` span of one execution, current inside the block; an exception that
        leaves the block marks it failed (error status, exception event). Counted and timed."""
        return _Step(self, record)

    def span(self, record: StepRecord) -> AbstractContextManager[object] | None:
        if self._tracer is None:
            return None
        attributes: dict[str, Any] = {
            "pgflow.run_id": self._run_id, "pgflow.workflow_id": self.workflow["pgflow.workflow_id"],
            "pgflow.step_id": record.step_id, "pgflow.attempt": max(record.attempts, 1),
            "pgflow.step.kind": record.kind,
        }  # fmt: skip
        return self._tracer.start_as_current_span(
            "pgflow.step", self._parent, SpanKind.CONSUMER, attributes, self._links
        )

    def ended(self, status: str, seconds: float) -> None:
        counted = self._counted[status]
        self.instruments.steps.add(1, counted)
        self.instruments.step_duration.record(seconds, counted)

    def transaction(self, transaction: tuple[Any, StepRecord] | None) -> AbstractContextManager[None]:
        """A commit's span: the step span of the ``Transaction`` step it runs, if any."""
        return _NOTHING if transaction is None else _Step(self, transaction[1])

    def carrier(self) -> dict[str, str] | None:
        """What a child run started now stores: the current context (the ``Child`` step's span);
        None when untraced (the child then keeps its parent's context: ``protocol._start_child``)."""
        if self._tracer is None:
            return None
        found: dict[str, str] = {}
        _W3C.inject(found)
        return found or None

    def committed(self, outcome: RunOutcome, result: CommitResult) -> None:
        """Count a run whose end this commit wrote."""
        if not result.ok or not isinstance(outcome, CompleteRun | FailRun):
            return
        status = "completed" if isinstance(outcome, CompleteRun) else "failed"
        self.instruments.runs.add(1, self._counted[status])


class _Step:
    """``RunTelemetry.step``: a plain context manager (a generator-based one costs more per step)."""

    __slots__ = ("_record", "_run", "_span", "_started")

    def __init__(self, run: RunTelemetry, record: StepRecord) -> None:
        self._run = run
        self._record = record

    def __enter__(self) -> None:
        self._span = self._run.span(self._record)
        if self._span is not None:
            self._span.__enter__()
        self._started = time.perf_counter()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        seconds = time.perf_counter() - self._started
        if self._span is not None:
            self._span.__exit__(kind, exc, tb)
        if exc is None:
            self._run.ended("completed", seconds)
        elif isinstance(exc, Exception):  # not a stop or a simulated crash: nothing ended then
            self._run.ended("failed", seconds)
