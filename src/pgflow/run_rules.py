"""Run-level rules a worker applies around replay: the workflow timeout and what a failed attempt
becomes (a retry after its backoff, or the end). Pure functions beside ``transitions.py``."""

from __future__ import annotations

import pendulum

from .arguments import add_time
from .errors import WorkflowTimeoutError
from .records import RunError
from .step_records import error_of
from .store import FailRun, RetryRun, RunRow

__all__ = ["after_failure", "retry_due", "timeout_error"]

DateTime = pendulum.DateTime


def timeout_error(run: RunRow, now: DateTime) -> RunError | None:
    """The WorkflowTimeoutError a run gets once ``now`` reaches its ``timeout_at`` (else None)."""
    if run.timeout_at is None or now < run.timeout_at:
        return None
    msg = f"run {run.id} of workflow {run.workflow_id!r} exceeded its timeout (at {run.timeout_at})"
    return error_of(WorkflowTimeoutError(msg), run.current_step_id)


def retry_due(run: RunRow, now: DateTime) -> DateTime:
    """When the next attempt of a run whose attempt ``retry_count + 1`` failed starts:
    ``retry_backoff × 2^retry_count`` from now (1 s, 2 s, 4 s … by default)."""
    seconds = run.retry_backoff * 2.0 ** min(run.retry_count, 64)
    try:
        backoff = pendulum.duration(seconds=seconds)
    except OverflowError:
        return DateTime.max.replace(tzinfo=pendulum.UTC)
    try:
        return add_time(now, backoff, "retry_backoff")
    except ValueError:  # InvalidDurationError: past year 9999, so in practice never again
        return DateTime.max.replace(tzinfo=pendulum.UTC)


def after_failure(run: RunRow, error: RunError, retryable: bool, now: DateTime) -> FailRun | RetryRun:
    """A failed attempt: retried after its backoff while attempts are left, else the run fails."""
    if retryable and run.retry_count < run.max_retries:
        return RetryRun(error, retry_due(run, now))
    return FailRun(error)
