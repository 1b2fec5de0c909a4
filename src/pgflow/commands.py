"""Step commands: the values a workflow generator ``yield``s.

Commands are frozen values; nothing runs when one is built. Each checks its arguments when it is
built (step ids, event names, functions, durations, times), so a mistake raises a named
``InvalidArgumentError`` / ``InvalidDurationError`` at the line that made it. Inside a workflow
that error escapes the generator, and the interpreter (``replay.py``) fails the run at once, not
retried, with a ``WorkflowDefinitionError``. Durations and times keep the value as written; the
interpreter parses them again when it records the step.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pendulum

from .arguments import (
    INT32_MAX,
    check_callable,
    check_id,
    check_int,
    check_number,
    check_optional_id,
    shown,
)
from .durations import DurationLike, check_duration, check_optional_duration, check_when
from .errors import InvalidArgumentError

__all__ = [
    "All",
    "Child",
    "Command",
    "Delay",
    "Pause",
    "Poll",
    "PollResult",
    "Retry",
    "Run",
    "Sleep",
    "StepCommand",
    "Transaction",
    "WaitFor",
    "WaitUntil",
]


# Retry's converters: each checks one argument and names it (attrs passes the value alone).


def _max_attempts(value: int) -> int:
    return check_int(value, "Retry.max_attempts", 1, INT32_MAX)


def _factor(value: float) -> float:
    return check_number(value, "Retry.factor", 0, above=True)


def _jitter(value: float) -> float:
    return check_number(value, "Retry.jitter", 0, 1)


def _initial(value: DurationLike) -> pendulum.Duration:
    return check_duration(value, "Retry.initial")


def _max_delay(value: DurationLike) -> pendulum.Duration:
    return check_duration(value, "Retry.max_delay")


def _exception_classes(
    value: type[BaseException] | Iterable[type[BaseException]],
) -> tuple[type[BaseException], ...]:
    """One exception class or an iterable of them (as ``except`` takes), as a tuple."""
    items = (value,) if isinstance(value, type) else value
    classes = tuple(items) if isinstance(items, tuple | list | set | frozenset) else None
    if classes is None or not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
        raise InvalidArgumentError(
            f"Retry.non_retryable must be an exception class or a tuple of them, got {shown(value)}"
        )
    return classes


@attrs.frozen
class Retry:
    """Per-step retry policy for ``Run``: exponential backoff with deterministic jitter."""

    max_attempts: int = attrs.field(default=3, converter=_max_attempts)
    initial: pendulum.Duration = attrs.field(default=pendulum.duration(seconds=1), converter=_initial)
    factor: float = attrs.field(default=2.0, converter=_factor)
    max_delay: pendulum.Duration = attrs.field(default=pendulum.duration(hours=1), converter=_max_delay)
    jitter: float = attrs.field(default=0.1, converter=_jitter)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_classes)

    def retryable(self, error: BaseException) -> bool:
        return not isinstance(error, self.non_retryable)

    def backoff(self, attempt: int, seed: str) -> pendulum.Duration:
        """Wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed). Jitter is derived from
        ``seed`` so the same run and step always get the same wait (no hidden randomness)."""
        try:
            base = self.initial.total_seconds() * self.factor ** (attempt - 1)
        except OverflowError:  # a large factor after many attempts: the cap applies
            base = math.inf
        base = min(base, self.max_delay.total_seconds())
        spread = (zlib.crc32(f"{seed}:{attempt}".encode()) / 0xFFFFFFFF) * 2 - 1  # in [-1, 1]
        return pendulum.duration(seconds=max(0.0, base * (1 + self.jitter * spread)))


@attrs.frozen
class PollResult:
    """What a ``Poll`` step yields back."""

    timed_out: bool
    data: Any = None


@attrs.frozen(init=False)
class Run:
    """Run ``fn(*args)`` (sync or ``async def``) as a recorded step."""

    step_id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    retry: Retry | None
    timeout: Any

    def __init__(
        self,
        step_id: str,
        fn: Callable[..., Any],
        *args: Any,
        retry: Retry | None = None,
        timeout: Any = None,
    ) -> None:
        self.__attrs_init__(step_id, fn, args, retry, timeout)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_callable(self.fn, "fn")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise InvalidArgumentError(
                f"retry must be a pgflow.Retry(...) or None, got {type(self.retry).__name__}: {shown(self.retry)}"
            )
        check_optional_duration(self.timeout, "timeout")


@attrs.frozen
class WaitFor:
    """Wait for an event named ``event`` (from the run's mailbox); yields its data or ``None``."""

    step_id: str
    event: str
    timeout: Any = attrs.field(default=None, kw_only=True)
    schema: Any = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_id(self.event, "event")
        check_optional_duration(self.timeout, "timeout")


@attrs.frozen
class WaitUntil:
    """Suspend until ``when`` (aware datetime, pendulum DateTime or ISO-8601 string)."""

    step_id: str
    when: Any

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_when(self.when, "when")


@attrs.frozen
class Delay:
    """Suspend for ``duration`` (see ``parse_duration``)."""

    step_id: str
    duration: Any

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_duration(self.duration, "duration")


Sleep = Delay


@attrs.frozen
class Pause:
    """Suspend until ``resume_workflow`` or ``fast_forward_workflow``."""

    step_id: str

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)


@attrs.frozen
class Poll:
    """Call ``fn()`` now and every ``interval`` until it returns something other than None/False."""

    step_id: str
    fn: Callable[[], Any]
    interval: Any = attrs.field(default="30s", kw_only=True)
    timeout: Any = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_callable(self.fn, "fn")
        check_duration(self.interval, "interval")
        check_optional_duration(self.timeout, "timeout")


@attrs.frozen(init=False)
class Transaction:
    """Run ``fn(conn, *args)`` inside the transaction that records the step (exactly once)."""

    step_id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def __init__(self, step_id: str, fn: Callable[..., Any], *args: Any) -> None:
        self.__attrs_init__(step_id, fn, args)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_callable(self.fn, "fn")


@attrs.frozen
class Child:
    """Start ``workflow`` as a child run and wait for its output."""

    step_id: str
    workflow: Any
    input: Any = None
    resource_id: str | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        _check_child_workflow(self.workflow)
        check_optional_id(self.resource_id, "resource_id")


StepCommand = Run | WaitFor | WaitUntil | Delay | Pause | Poll | Transaction | Child


@attrs.frozen(init=False)
class All:
    """Run several commands concurrently; yields their results in argument order."""

    commands: tuple[StepCommand, ...]

    def __init__(self, *commands: StepCommand) -> None:
        self.__attrs_init__(tuple(commands))

    def __attrs_post_init__(self) -> None:
        if not self.commands:
            raise InvalidArgumentError("All(...) needs at least one step command, got none")
        for position, command in enumerate(self.commands):
            if type(command) not in KIND_OF:  # All inside All too: its parts run as one group
                raise InvalidArgumentError(
                    f"All(...) takes step commands (Run, WaitFor, ...): argument {position} is "
                    f"{type(command).__name__}: {shown(command)}"
                )


Command = StepCommand | All

KIND_OF: dict[type, str] = {
    Run: "run",
    WaitFor: "wait_for",
    WaitUntil: "wait_until",
    Delay: "delay",
    Pause: "pause",
    Poll: "poll",
    Transaction: "transaction",
    Child: "child",
}


def _check_step_id(step_id: object) -> None:
    check_id(step_id, "step_id")


def _check_child_workflow(workflow: object) -> None:
    """A workflow id, or a Workflow/WorkflowRef (duck-typed: definitions sit a layer above)."""
    if isinstance(workflow, str):
        check_id(workflow, "workflow")
    elif not (isinstance(getattr(workflow, "id", None), str) and hasattr(workflow, "validate_input")):
        raise InvalidArgumentError(
            f"workflow must be a Workflow, a WorkflowRef or a workflow id, got {type(workflow).__name__}: "
            f"{shown(workflow)}"
        )
