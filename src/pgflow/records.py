"""What pgflow reports about runs: statuses, runs, step records, progress and pages."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs
import pendulum

__all__ = [
    "TERMINAL",
    "Event",
    "Progress",
    "RunError",
    "RunPage",
    "RunStatus",
    "StepRecord",
    "Waiting",
    "WorkflowRun",
]


class RunStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


TERMINAL: frozenset[RunStatus] = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

DateTime = pendulum.DateTime


@attrs.frozen
class RunError:
    """A failure: the original exception's class name and message, where it happened."""

    type: str
    message: str
    traceback: str | None = None
    step_id: str | None = None


@attrs.frozen
class StepRecord:
    """One step of a run. ``status`` is ``running`` (its code runs now), ``waiting``, ``completed``
    or ``failed``; ``attempts`` counts the attempts started; ``seq`` is 1, 2, … in the order the run
    first reached its steps.

    Beyond the public fields, ``wake_at`` (timer, poll tick or retry backoff), ``timeout_at``
    (WaitFor/Poll deadline), ``event`` (WaitFor's event name) and ``run_attempt`` (the run attempt
    that recorded it) let replay continue exactly where the step stopped.
    """

    step_id: str
    kind: str
    status: str
    output: Any = None
    error: RunError | None = None
    timed_out: bool = False
    attempts: int = 0
    started_at: DateTime | None = None
    completed_at: DateTime | None = None
    wake_at: DateTime | None = None
    timeout_at: DateTime | None = None
    event: str | None = None
    run_attempt: int = 0
    seq: int = 0


@attrs.frozen
class Waiting:
    """Where a suspended run waits: the step, its kind, the event (WaitFor) and the wake-up time."""

    step_id: str
    kind: str
    event: str | None = None
    wake_at: DateTime | None = None


@attrs.frozen
class Event:
    """A mailbox entry: an event delivered to a run, not yet consumed by a ``WaitFor``."""

    id: int
    name: str
    data: Any
    created_at: DateTime


@attrs.frozen
class WorkflowRun:
    """A snapshot of one run."""

    id: str
    workflow_id: str
    resource_id: str | None
    status: RunStatus
    input: Any
    output: Any
    error: RunError | None
    current_step_id: str | None
    timeline: Mapping[str, StepRecord]
    waiting: Waiting | None
    wake_at: DateTime | None
    held: bool
    retry_count: int
    max_retries: int
    idempotency_key: str | None
    created_at: DateTime
    updated_at: DateTime
    paused_at: DateTime | None
    resumed_at: DateTime | None
    completed_at: DateTime | None
    timeout_at: DateTime | None
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    concurrency_key: str | None = None
    priority: int = 0


@attrs.frozen
class Progress(WorkflowRun):
    """A run plus how far it got against the workflow's static step list."""

    completion_percentage: float = attrs.field(default=0.0, kw_only=True)
    completed_steps: int = attrs.field(default=0, kw_only=True)
    total_steps: int = attrs.field(default=0, kw_only=True)


@attrs.frozen
class RunPage:
    """One page of ``get_runs``, newest first, with keyset cursors (run ids)."""

    items: list[WorkflowRun]
    next_cursor: str | None
    prev_cursor: str | None
    has_more: bool
    has_prev: bool
