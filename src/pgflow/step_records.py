"""The one home of step records: how each state of a step is written, and how failures are described.

A step's record goes through these states (SPEC §4, §13): ``running`` before its code starts,
``waiting`` while it waits (a timer, an event, a poll tick, a retry backoff, a child run), then
``completed`` or ``failed``. Every record a worker or a store writes is built here, so the fields
each state carries (``attempts``, ``started_at``, ``seq``, …) are decided in one place. Pure: no I/O.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

import attrs
import pendulum

from . import serde
from .arguments import add_time, escape_text
from .durations import parse_duration
from .errors import SerializationError, StepFailedError
from .records import RunError, StepRecord

__all__ = [
    "completed",
    "error_of",
    "failed",
    "failures",
    "first_record",
    "poll_outcome",
    "retrying",
    "run_outcome",
    "running",
    "timeout_seconds",
    "waiting",
]

DateTime = pendulum.DateTime
MAX_MESSAGE = 20_000  # characters of an error message or traceback kept in a record


def _text(value: str) -> str:
    """Storable text: NUL and lone surrogates escaped, bounded in size."""
    text = escape_text(value)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"… ({len(text)} characters)"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as broken:  # a __str__ that raises must not make the failure unrecordable
        return f"<message unavailable: {type(broken).__name__} in {type(exc).__name__}.__str__>"


def _traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:
        return f"{type(exc).__name__} (traceback unavailable)"


def error_of(exc: BaseException, step_id: str | None = None) -> RunError:
    """The storable RunError describing ``exc``; a StepFailedError describes the original exception.

    Messages and tracebacks never fail to record: NUL and lone surrogates are escaped as ``repr``
    shows them, oversized text is cut, and a ``__str__`` that raises is described instead."""
    if isinstance(exc, StepFailedError):
        tb = getattr(exc, "original_traceback", None)
        return RunError(
            _text(exc.error_type), _text(exc.message), None if tb is None else _text(tb), _id(exc.step_id)
        )
    return RunError(_text(type(exc).__name__), _text(_message(exc)), _text(_traceback(exc)), _id(step_id))


def _id(step_id: object) -> str | None:
    """A step id as a RunError names it: storable even when the id itself is the problem."""
    return None if not isinstance(step_id, str) else escape_text(step_id)[:MAX_MESSAGE]


def first_record(
    step_id: str, kind: str, status: str, now: DateTime, seq: int, run_attempt: int, **fields: Any
) -> StepRecord:
    """The record of a step reached for the first time (waits start here; runs start ``running``)."""
    return StepRecord(step_id, kind, status, started_at=now, seq=seq, run_attempt=run_attempt, **fields)


def running(
    step_id: str, kind: str, previous: StepRecord | None, now: DateTime, seq: int, run_attempt: int
) -> StepRecord:
    """The record written before a step's code starts: ``attempts`` is the attempt now running (1 for
    the first); ``started_at`` stays the step's first start; a deadline (Poll) is kept.

    A ``previous`` record still ``running`` is an attempt whose outcome was never recorded (the worker
    died, lost its lease or abandoned it at a stop): it counts on in ``attempts`` (SPEC §13) and in
    ``interrupted``, so that a ``Retry`` counts only the attempts that failed (see ``failures``)."""
    if previous is None:
        return first_record(step_id, kind, "running", now, seq, run_attempt, attempts=1)
    interrupted = previous.interrupted + (1 if previous.status == "running" else 0)
    return attrs.evolve(
        previous, status="running", attempts=previous.attempts + 1, error=None, wake_at=None,
        completed_at=None, run_attempt=run_attempt, started_at=previous.started_at or now,
        interrupted=interrupted,
    )  # fmt: skip


def failures(record: StepRecord) -> int:
    """How many attempts of a step have failed, the one ``record`` describes included: the attempts
    started but those a crash interrupted. A crash re-runs the attempt it cut short, so it must not use
    up a ``Retry``'s budget nor move its backoff schedule on: the crashed run then retries exactly as
    the crash-free one (same waits, same number of failures tolerated) and ends like it."""
    return record.attempts - record.interrupted


def completed(record: StepRecord, output: Any, now: DateTime, **fields: Any) -> StepRecord:
    """The step's final value: ``output`` is JSON already (or None)."""
    return attrs.evolve(
        record, status="completed", output=output, error=None, completed_at=now, wake_at=None, **fields
    )


def failed(record: StepRecord, error: RunError, now: DateTime) -> StepRecord:
    """The step failed for good (thrown into the workflow as a StepFailedError)."""
    return attrs.evolve(record, status="failed", error=error, completed_at=now, wake_at=None)


def retrying(record: StepRecord, error: RunError, wake_at: DateTime) -> StepRecord:
    """An attempt failed and the step's Retry allows another at ``wake_at`` (a durable timer)."""
    return attrs.evolve(record, status="waiting", error=error, wake_at=wake_at)


def waiting(record: StepRecord, **fields: Any) -> StepRecord:
    """The step waits (poll tick, child run): back to ``waiting`` with the given fields."""
    return attrs.evolve(record, status="waiting", **fields)


# outcomes of executed steps ------------------------------------------------------------------


def run_outcome(
    cmd: Any, running_record: StepRecord, value: Any, error: Exception | None, now: DateTime, run_id: str
) -> tuple[StepRecord, RunError | None]:
    """The record of a ``Run`` attempt that returned ``value`` or raised ``error``; the second item
    fails the whole run at once (a result the converter cannot store)."""
    if error is not None:
        return _run_failed(cmd, running_record, error, now, run_id), None
    try:
        output = serde.to_json(value)
    except SerializationError as exc:
        err = error_of(
            SerializationError(f"result of step {cmd.step_id!r} of run {run_id}: {exc}"), cmd.step_id
        )
        return failed(running_record, err, now), err
    return completed(running_record, output, now), None


def _run_failed(cmd: Any, rec: StepRecord, exc: Exception, now: DateTime, run_id: str) -> StepRecord:
    err = error_of(exc, cmd.step_id)
    policy = cmd.retry
    failed_attempts = failures(rec)
    if policy is not None and failed_attempts < policy.max_attempts and policy.retryable(exc):
        wait = policy.backoff(failed_attempts, f"{run_id}:{cmd.step_id}")
        return retrying(rec, err, add_time(now, wait, "Retry backoff"))
    return failed(rec, err, now)


def poll_outcome(
    cmd: Any, running_record: StepRecord, value: Any, now: DateTime, run_id: str
) -> tuple[StepRecord, RunError | None]:
    """The record of one ``Poll`` call: not yet (None/False: the next tick), or its data."""
    if value is None or value is False:
        interval = parse_duration(cmd.interval)
        return waiting(running_record, wake_at=add_time(now, interval, "Poll interval")), None
    try:
        output = serde.to_json(value)
    except SerializationError as exc:
        err = error_of(
            SerializationError(f"result of poll {cmd.step_id!r} of run {run_id}: {exc}"), cmd.step_id
        )
        return failed(running_record, err, now), err
    return completed(running_record, output, now), None


def timeout_seconds(timeout: Any) -> float | None:
    """A step's ``timeout`` in seconds for a blocking wait (capped: a wait longer than the platform's
    limit is the same as no limit in practice)."""
    if timeout is None:
        return None
    return min(parse_duration(timeout).total_seconds(), threading.TIMEOUT_MAX)
