"""The public API is pinned (SPEC §9): ``pgflow.__all__`` and what it resolves to."""

from __future__ import annotations

import importlib

import pytest

import pgflow
import pgflow.errors

SPEC_NAMES = {
    "workflow", "ref", "Workflow", "WorkflowRef", "Context", "StepInfo",
    "Run", "WaitFor", "WaitUntil", "Delay", "Sleep", "Pause", "Poll", "Transaction", "All", "Child",
    "Retry", "PollResult", "Engine", "Client", "AsyncClient", "WorkflowRun", "StepRecord", "Waiting",
    "RunError", "Progress", "RunPage", "RunStatus", "TERMINAL", "parse_duration",
    # from the later sections (§14, §17 so far)
    "check_replay", "ReplayReport", "ReplayDivergence", "Flow", "output_of", "AsyncEngine",
    "Schedule", "ScheduleInfo",  # §16
}  # fmt: skip
ERROR_NAMES = {
    "PgflowError", "WorkflowDefinitionError", "UnknownWorkflowError", "InvalidInputError",
    "InvalidArgumentError", "InvalidDurationError", "RunNotFoundError", "InvalidStateError",
    "IdempotencyConflictError", "StepFailedError", "StepTimeoutError", "ChildFailedError",
    "NonDeterminismError", "DuplicateStepError", "SerializationError", "UnsupportedError",
    "WorkflowTimeoutError", "ConfigurationError", "StorageError",
    "ScheduleNotFoundError",  # §16
}  # fmt: skip
EXTRA_NAMES: set[str] = {"Event", "WorkflowInfo"}  # beyond SPEC §9, deliberately: the dashboard reads


def test_all_is_exactly_the_spec_names() -> None:
    """``pgflow.__all__`` is the SPEC §9 list plus the deliberate extras, nothing else."""
    assert set(pgflow.__all__) == SPEC_NAMES | ERROR_NAMES | EXTRA_NAMES
    assert len(pgflow.__all__) == len(set(pgflow.__all__))


def test_every_error_module_name_is_reexported() -> None:
    """Every error class of ``pgflow.errors`` is re-exported from ``pgflow``, one root."""
    assert set(pgflow.errors.__all__) == ERROR_NAMES
    for name in ERROR_NAMES:
        cls = getattr(pgflow, name)
        assert cls is getattr(pgflow.errors, name)
        assert issubclass(cls, pgflow.PgflowError)
    assert issubclass(pgflow.InvalidDurationError, ValueError)


@pytest.mark.parametrize("name", sorted(SPEC_NAMES - {"Engine", "Client", "AsyncClient"}))
def test_core_names_are_importable(name: str) -> None:
    """Each core name is importable with ``from pgflow import NAME``."""
    module = importlib.import_module("pgflow")
    assert getattr(module, name) is not None


@pytest.mark.parametrize("name", ["Engine", "Client", "AsyncClient"])
def test_runtime_names_are_importable(name: str) -> None:
    """The runtime classes resolve lazily (they need the Postgres modules)."""
    try:
        value = getattr(pgflow, name)
    except ImportError as exc:  # the runtime modules are written in parallel with this suite
        pytest.skip(f"runtime not available yet: {exc}")
    assert isinstance(value, type)


def test_sleep_is_delay() -> None:
    """``Sleep`` is an alias of ``Delay``."""
    assert pgflow.Sleep is pgflow.Delay


def test_terminal_statuses() -> None:
    """``TERMINAL`` is the frozenset of completed/failed/cancelled."""
    assert frozenset({"completed", "failed", "cancelled"}) == pgflow.TERMINAL
    assert isinstance(pgflow.TERMINAL, frozenset)
    assert pgflow.RunStatus("pending") == "pending"


CLIENT_METHODS = (
    "start_workflow", "trigger_event", "pause_workflow", "resume_workflow", "cancel_workflow",
    "fast_forward_workflow", "get_run", "check_progress", "get_runs", "wait_for_run",
    "retry_workflow",
    "create_schedule", "get_schedule", "list_schedules", "pause_schedule", "resume_schedule",
    "delete_schedule",  # §16
)  # fmt: skip


@pytest.mark.parametrize("name", CLIENT_METHODS)
def test_async_client_methods_mirror_the_client(name: str) -> None:
    """AsyncClient has every Client method as a coroutine, with exactly the same parameters."""
    import inspect

    sync, coro = getattr(pgflow.Client, name), getattr(pgflow.AsyncClient, name)
    assert inspect.iscoroutinefunction(coro)
    assert inspect.signature(coro).parameters == inspect.signature(sync).parameters
