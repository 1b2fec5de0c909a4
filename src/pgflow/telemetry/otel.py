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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib import metadata
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

    @contextmanager
    def starting(self, workflow: object) -> Iterator[Callable[[WorkflowRun], None]]:
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

    def for_run(self, claimed: Claimed) -> RunTelemetry:
        run = claimed.run
        traced = RunTelemetry(self, run.id, run.workflow_id, *_origin(claimed))
        if claimed.due is not None:  # the claim wrote its time in updated_at
            delay = max((run.updated_at - claimed.due).total_seconds(), 0.0)
            self.instruments().claim_delay.record(delay, traced.workflow)
        return traced


def _origin(claimed: Claimed) -> tuple[Context, Sequence[Link] | None]:
    """The parent of the run's step spans, or a root with a link (see the module doc)."""
    run = claimed.run
    if not run.trace_context:
        return _ROOT, None
    stored = _W3C.extract(run.trace_context)
    span_context = trace.get_current_span(stored).get_span_context()
    if not span_context.is_valid:
        return _ROOT, None
    if run.updated_at - run.created_at <= CHILD_WINDOW:
        return stored, None
    return _ROOT, (Link(span_context, {"pgflow.link": "start_workflow"}),)


class RunTelemetry:
    """The spans and counts of one claimed run, for the driver that processes it."""

    def __init__(
        self, otel: Otel, run_id: str, workflow_id: str, parent: Context, links: Sequence[Link] | None
    ) -> None:
        self._otel = otel
        self._run_id = run_id
        self.workflow = {"pgflow.workflow_id": workflow_id}
        self._parent = parent
        self._links = links

    @contextmanager
    def step(self, record: StepRecord) -> Iterator[None]:
        """The ``pgflow.step`` span of one execution, current inside the block; an exception that
        leaves the block marks it failed (error status, exception event). Counted and timed."""
        attributes: dict[str, Any] = {
            "pgflow.run_id": self._run_id, "pgflow.workflow_id": self.workflow["pgflow.workflow_id"],
            "pgflow.step_id": record.step_id, "pgflow.attempt": max(record.attempts, 1),
            "pgflow.step.kind": record.kind,
        }  # fmt: skip
        status: str | None = "failed"
        started = time.perf_counter()
        try:
            with self._otel.tracer().start_as_current_span(
                "pgflow.step", self._parent, SpanKind.CONSUMER, attributes, self._links
            ):
                yield
            status = "completed"
        except BaseException as exc:
            if not isinstance(exc, Exception):  # a stop or a simulated crash: nothing ended, nothing counted
                status = None
            raise
        finally:
            if status is not None:
                seconds = time.perf_counter() - started
                instruments = self._otel.instruments()
                counted = {**self.workflow, "status": status}
                instruments.steps.add(1, counted)
                instruments.step_duration.record(seconds, counted)

    def transaction(self, transaction: tuple[Any, StepRecord] | None) -> AbstractContextManager[None]:
        """A commit's span: the step span of the ``Transaction`` step it runs, if any."""
        return _NOTHING if transaction is None else self.step(transaction[1])

    def carrier(self) -> dict[str, str] | None:
        """The current context (inside a ``Child`` step's span): what its child run stores."""
        found: dict[str, str] = {}
        _W3C.inject(found)
        return found or None

    def committed(self, outcome: RunOutcome, result: CommitResult) -> None:
        """Count a run whose end this commit wrote."""
        if not result.ok or not isinstance(outcome, CompleteRun | FailRun):
            return
        status = "completed" if isinstance(outcome, CompleteRun) else "failed"
        self._otel.instruments().runs.add(1, {**self.workflow, "status": status})
