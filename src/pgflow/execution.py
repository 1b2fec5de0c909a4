"""Calling user step functions (sync or async, with timeouts) and turning results into records."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import types
from collections.abc import Callable
from typing import Any

import attrs
import pendulum

from . import serde
from .commands import Poll, Run
from .durations import parse_duration
from .errors import SerializationError, StepTimeoutError
from .records import RunError, StepRecord
from .replay import error_of

log = logging.getLogger("pgflow.worker")
DateTime = pendulum.DateTime


class StepCaller:
    """Runs step functions. Sync functions run in the calling thread, or in a helper thread when
    they have a timeout (abandoned on expiry); ``async def`` functions run on one event loop thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pgflow-async-steps", daemon=True).start()
                self._loop = loop
            return self._loop

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, what: str) -> Any:
        if _is_async(fn):
            return self._call_async(fn, args, timeout, what)
        if timeout is None:
            result = fn(*args)
            if inspect.isawaitable(result):
                return self._await(result, None, what)
            return result
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgflow-step")
        future = pool.submit(fn, *args)
        pool.shutdown(wait=False)  # an abandoned thread finishes on its own; its result is discarded
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise StepTimeoutError(f"{what} timed out after {timeout:g}s") from None

    def _call_async(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, what: str
    ) -> Any:
        return self._await(fn(*args), timeout, what)

    def _await(self, awaitable: Any, timeout: float | None, what: str) -> Any:
        async def runner() -> Any:
            return await asyncio.wait_for(awaitable, timeout)

        future = asyncio.run_coroutine_threadsafe(runner(), self._event_loop())
        try:
            return future.result()
        except TimeoutError:
            raise StepTimeoutError(f"{what} timed out after {timeout:g}s") from None

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


def _is_async(fn: Callable[..., Any]) -> bool:
    """``async def`` (or an object whose ``__call__`` is). A plain function or bound method is
    decided by its own flags alone: the ``__call__`` of its type is never a coroutine function."""
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, types.FunctionType | types.MethodType):
        return False
    return inspect.iscoroutinefunction(type(fn).__call__)


@attrs.frozen
class StepResult:
    """A step's new record; ``fatal`` fails the whole run at once (not thrown into the workflow)."""

    record: StepRecord
    fatal: RunError | None = None


def _base(cmd: Run | Poll, kind: str, rec: StepRecord | None, now: DateTime, attempt: int) -> StepRecord:
    if rec is not None:
        return rec
    return StepRecord(cmd.step_id, kind, "waiting", started_at=now, run_attempt=attempt)


def execute_run(
    caller: StepCaller, cmd: Run, rec: StepRecord | None, clock: Any, run_id: str, attempt: int
) -> StepResult:
    start = clock.now()
    base = _base(cmd, "run", rec, start, attempt)
    tries = base.attempts + 1
    timeout = parse_duration(cmd.timeout).total_seconds() if cmd.timeout is not None else None
    try:
        value = caller.call(cmd.fn, cmd.args, timeout, f"step {cmd.step_id!r} of run {run_id}")
    except Exception as exc:
        return _run_failed(cmd, base, exc, tries, clock.now(), run_id)
    now = clock.now()
    try:
        output = serde.to_json(value)
    except SerializationError as exc:
        err = error_of(
            SerializationError(f"result of step {cmd.step_id!r} of run {run_id}: {exc}"), cmd.step_id
        )
        return StepResult(
            attrs.evolve(base, status="failed", error=err, attempts=tries, completed_at=now), err
        )
    done = attrs.evolve(base, status="completed", output=output, error=None, attempts=tries, completed_at=now,
                        wake_at=None, run_attempt=attempt)  # fmt: skip
    return StepResult(done)


def _run_failed(
    cmd: Run, base: StepRecord, exc: Exception, tries: int, now: DateTime, run_id: str
) -> StepResult:
    err = error_of(exc, cmd.step_id)
    policy = cmd.retry
    if policy is not None and tries < policy.max_attempts and policy.retryable(exc):
        wait = policy.backoff(tries, f"{run_id}:{cmd.step_id}")
        log.info(
            "step %r of run %s failed (attempt %d), retrying in %s: %s", cmd.step_id, run_id, tries, wait, exc
        )
        return StepResult(attrs.evolve(base, status="waiting", error=err, attempts=tries, wake_at=now + wait))
    return StepResult(
        attrs.evolve(base, status="failed", error=err, attempts=tries, completed_at=now, wake_at=None)
    )


def execute_poll(
    caller: StepCaller, cmd: Poll, rec: StepRecord | None, clock: Any, run_id: str, attempt: int
) -> StepResult:
    start = clock.now()
    base = _base(cmd, "poll", rec, start, attempt)
    tries = base.attempts + 1
    try:
        value = caller.call(cmd.fn, (), None, f"poll {cmd.step_id!r} of run {run_id}")
    except Exception as exc:
        log.warning("poll %r of run %s raised (counts as not yet): %r", cmd.step_id, run_id, exc)
        value = None
    now = clock.now()
    if value is None or value is False:
        interval = parse_duration(cmd.interval)
        return StepResult(attrs.evolve(base, attempts=tries, wake_at=now + interval))
    try:
        output = serde.to_json(value)
    except SerializationError as exc:
        err = error_of(
            SerializationError(f"result of poll {cmd.step_id!r} of run {run_id}: {exc}"), cmd.step_id
        )
        return StepResult(
            attrs.evolve(base, status="failed", error=err, attempts=tries, completed_at=now), err
        )
    return StepResult(attrs.evolve(base, status="completed", output=output, attempts=tries, completed_at=now,
                                   wake_at=None))  # fmt: skip
