"""Table-driven unit tests of ``run_rules.py`` (SPEC §5): the workflow timeout and what a failed
run attempt becomes. Pure functions on a ``RunRow``, no store, no clock."""

from __future__ import annotations

from typing import Any

import attrs
import pendulum
import pytest

from pgflow import run_rules
from pgflow.records import RunError, RunStatus
from pgflow.store import FailRun, RetryRun, RunRow

T0 = pendulum.datetime(2024, 1, 1, tz="UTC")
NOW = T0.add(seconds=100)
END_OF_TIME = pendulum.DateTime.max  # 9999-12-31 23:59:59.999999 UTC: "never, in practice"
ERR = RunError("ValueError", "boom", "Traceback ...", "a")

ROW = RunRow(id="r1", workflow_id="wf", resource_id=None, status=RunStatus.RUNNING, input=None, created_at=T0,
             updated_at=T0, current_step_id="charge", max_retries=3, retry_backoff=1.0)  # fmt: skip


def row(**kw: Any) -> RunRow:
    return attrs.evolve(ROW, **kw)


# ================================================================================== timeout_error


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(row(), id="no-timeout"),
        pytest.param(row(timeout_at=NOW.add(microseconds=1)), id="timeout-ahead"),
    ],
)
def test_no_timeout_error_before_the_deadline(run: RunRow) -> None:
    """A run without a timeout, or before its ``timeout_at``, has not timed out."""
    assert run_rules.timeout_error(run, NOW) is None


@pytest.mark.parametrize("timeout_at", [NOW, NOW.subtract(hours=1)], ids=["exactly-now", "past"])
def test_a_run_at_its_deadline_times_out_at_its_current_step(timeout_at: pendulum.DateTime) -> None:
    """At ``timeout_at`` (or after) the run gets a WorkflowTimeoutError naming the run, its workflow
    and the deadline, at the step it was at."""
    error = run_rules.timeout_error(row(timeout_at=timeout_at), NOW)
    assert error is not None
    assert (error.type, error.step_id) == ("WorkflowTimeoutError", "charge")
    assert error.message == f"run r1 of workflow 'wf' exceeded its timeout (at {timeout_at})"


# ====================================================================================== retry_due


@pytest.mark.parametrize(
    ("retry_count", "backoff", "due"),
    [
        (0, 1.0, NOW.add(seconds=1)),
        (1, 1.0, NOW.add(seconds=2)),
        (2, 1.0, NOW.add(seconds=4)),
        (3, 0.5, NOW.add(seconds=4)),
        (40, 1.0, END_OF_TIME),  # 2^40 s: a real duration, but past year 9999 from now
        (64, 1.0, END_OF_TIME),  # 2^64 s: not even a duration
        (10**6, 1.0, END_OF_TIME),
    ],
)
def test_retry_due_doubles_the_backoff_and_caps_at_the_end_of_time(
    retry_count: int, backoff: float, due: pendulum.DateTime
) -> None:
    """The next attempt starts ``retry_backoff × 2^retry_count`` from now; a backoff past year 9999
    means the last representable (UTC, comparable) time rather than an error."""
    got = run_rules.retry_due(row(retry_count=retry_count, retry_backoff=backoff), NOW)
    assert got == due and got.utcoffset() == pendulum.duration(0)


# ================================================================================== after_failure


@pytest.mark.parametrize(
    ("run", "retryable", "expected"),
    [
        pytest.param(row(retry_count=0), True, RetryRun(ERR, NOW.add(seconds=1)), id="first-failure"),
        pytest.param(row(retry_count=2), True, RetryRun(ERR, NOW.add(seconds=4)), id="last-retry-left"),
        pytest.param(row(retry_count=3), True, FailRun(ERR), id="retries-used-up"),
        pytest.param(row(retry_count=0), False, FailRun(ERR), id="not-retryable"),
        pytest.param(row(max_retries=0), True, FailRun(ERR), id="no-retries"),
    ],
)
def test_after_failure(run: RunRow, retryable: bool, expected: Any) -> None:
    """A failed attempt is retried after its backoff while attempts are left and the error allows it;
    otherwise the run fails with that error."""
    assert run_rules.after_failure(run, ERR, retryable, NOW) == expected
