"""pgflow: durable workflows for Python on the PostgreSQL you already run."""

from __future__ import annotations

from .async_engine import AsyncEngine
from .checking import ReplayDivergence, ReplayReport, check_replay
from .client import AsyncClient, Client
from .commands import (
    All,
    Child,
    Delay,
    Flow,
    Pause,
    Poll,
    PollResult,
    Retry,
    Run,
    Sleep,
    Transaction,
    WaitFor,
    WaitUntil,
)
from .definition import Context, Workflow, WorkflowRef, output_of, ref, workflow
from .durations import parse_duration
from .engine import Engine
from .errors import (
    ChildFailedError,
    ConfigurationError,
    DuplicateStepError,
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidDurationError,
    InvalidInputError,
    InvalidStateError,
    NonDeterminismError,
    PgflowError,
    RunNotFoundError,
    ScheduleNotFoundError,
    SerializationError,
    StepFailedError,
    StepTimeoutError,
    StorageError,
    UnknownWorkflowError,
    UnsupportedError,
    WorkflowDefinitionError,
    WorkflowTimeoutError,
)
from .records import TERMINAL, Progress, RunError, RunPage, RunStatus, StepRecord, Waiting, WorkflowRun
from .schedules import Schedule, ScheduleInfo
from .static_steps import StepInfo

__version__ = "0.1.0"

__all__ = [
    "TERMINAL",
    "All",
    "AsyncClient",
    "AsyncEngine",
    "Child",
    "ChildFailedError",
    "Client",
    "ConfigurationError",
    "Context",
    "Delay",
    "DuplicateStepError",
    "Engine",
    "Flow",
    "IdempotencyConflictError",
    "InvalidArgumentError",
    "InvalidDurationError",
    "InvalidInputError",
    "InvalidStateError",
    "NonDeterminismError",
    "Pause",
    "PgflowError",
    "Poll",
    "PollResult",
    "Progress",
    "ReplayDivergence",
    "ReplayReport",
    "Retry",
    "Run",
    "RunError",
    "RunNotFoundError",
    "RunPage",
    "RunStatus",
    "SerializationError",
    "Sleep",
    "StepFailedError",
    "StepInfo",
    "StepRecord",
    "StepTimeoutError",
    "StorageError",
    "Transaction",
    "UnknownWorkflowError",
    "UnsupportedError",
    "WaitFor",
    "WaitUntil",
    "Waiting",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowRef",
    "WorkflowRun",
    "WorkflowTimeoutError",
    "check_replay",
    "output_of",
    "parse_duration",
    "ref",
    "workflow",
]

# What the dashboard's reads return (count_runs, list_workflows, get_mailbox, get_child_runs).
from .records import Event
from .static_steps import WorkflowInfo

__all__ += ["Event", "WorkflowInfo"]

# Durable cron schedules (SPEC §16).
__all__ += ["Schedule", "ScheduleInfo", "ScheduleNotFoundError"]
