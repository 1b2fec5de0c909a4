"""OpenTelemetry traces and metrics (SPEC §15), when ``opentelemetry-api`` is installed; else nothing.

Importing this module imports no ``opentelemetry`` module. The first call that needs telemetry (a
client's ``start_workflow``, a worker's first run) tries :mod:`pgflow.telemetry.otel` once; without
the API that answer is None for good, every function here is a no-op, and the drivers' hot paths
test one ``None`` per run. With the API, spans and metrics go to the global tracer and meter
providers (no-ops until the application sets an SDK's). ``otel.py`` says what is traced and counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..records import WorkflowRun
    from ..store import Claimed
    from .otel import Otel, RunTelemetry

__all__ = ["active", "cancelled", "carrier", "for_run", "starting"]

_UNSET: Any = object()
_otel: Any = _UNSET  # the Otel instance, or None when opentelemetry-api is not installed


def active() -> Otel | None:
    """The telemetry, or None when the ``otel`` extra is absent (decided at the first call)."""
    global _otel
    found = _otel
    if found is _UNSET:
        found = _otel = _load()
    return found  # type: ignore[no-any-return]


def _load() -> Otel | None:
    try:
        from .otel import Otel
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "opentelemetry":
            raise
        return None
    return Otel()


def _ignore(run: WorkflowRun) -> None:
    pass


_NOT_TRACED: AbstractContextManager[Callable[[WorkflowRun], None]] = contextlib.nullcontext(_ignore)


def starting(workflow: object) -> AbstractContextManager[Callable[[WorkflowRun], None]]:
    """The ``pgflow.start_workflow`` span, current inside the block; entering it gives a function
    to call with the started run (its id becomes an attribute)."""
    otel = active()
    return _NOT_TRACED if otel is None else otel.starting(workflow)


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``), to store with a
    new run; None when nothing is traced."""
    otel = active()
    return None if otel is None else otel.carrier()


def cancelled(run: WorkflowRun) -> None:
    """A client cancelled this run: count it in ``pgflow.runs``."""
    otel = active()
    if otel is not None:
        otel.cancelled(run)


def for_run(claimed: Claimed) -> RunTelemetry | None:
    """What a worker traces and counts for a run it claimed (records the claim delay now); None
    without the extra, or while no tracer or meter provider is set."""
    otel = active()
    return None if otel is None else otel.for_run(claimed)
