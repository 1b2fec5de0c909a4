"""Step commands: the values a workflow generator ``yield``s.

Commands are plain frozen values; nothing runs when one is built. The interpreter (``replay.py``)
validates them when they are yielded, so a bad command fails the run instead of raising inside
the workflow code (where it could be retried or swallowed).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import attrs
import pendulum

from .durations import parse_duration

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


@attrs.frozen
class Retry:
    """Per-step retry policy for ``Run``: exponential backoff with deterministic jitter."""

    max_attempts: int = 3
    initial: pendulum.Duration = attrs.field(default=pendulum.duration(seconds=1), converter=parse_duration)
    factor: float = 2.0
    max_delay: pendulum.Duration = attrs.field(default=pendulum.duration(hours=1), converter=parse_duration)
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"Retry.max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Retry.jitter must be between 0 and 1, got {self.jitter}")

    def retryable(self, error: BaseException) -> bool:
        return not isinstance(error, self.non_retryable)

    def backoff(self, attempt: int, seed: str) -> pendulum.Duration:
        """Wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed). Jitter is derived from
        ``seed`` so the same run and step always get the same wait (no hidden randomness)."""
        base = self.initial.total_seconds() * self.factor ** (attempt - 1)
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


@attrs.frozen
class WaitFor:
    """Wait for an event named ``event`` (from the run's mailbox); yields its data or ``None``."""

    step_id: str
    event: str
    timeout: Any = attrs.field(default=None, kw_only=True)
    schema: Any = attrs.field(default=None, kw_only=True)


@attrs.frozen
class WaitUntil:
    """Suspend until ``when`` (aware datetime, pendulum DateTime or ISO-8601 string)."""

    step_id: str
    when: Any


@attrs.frozen
class Delay:
    """Suspend for ``duration`` (see ``parse_duration``)."""

    step_id: str
    duration: Any


Sleep = Delay


@attrs.frozen
class Pause:
    """Suspend until ``resume_workflow`` or ``fast_forward_workflow``."""

    step_id: str


@attrs.frozen
class Poll:
    """Call ``fn()`` now and every ``interval`` until it returns something other than None/False."""

    step_id: str
    fn: Callable[[], Any]
    interval: Any = attrs.field(default="30s", kw_only=True)
    timeout: Any = attrs.field(default=None, kw_only=True)


@attrs.frozen(init=False)
class Transaction:
    """Run ``fn(conn, *args)`` inside the transaction that records the step (exactly once)."""

    step_id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]

    def __init__(self, step_id: str, fn: Callable[..., Any], *args: Any) -> None:
        self.__attrs_init__(step_id, fn, args)


@attrs.frozen
class Child:
    """Start ``workflow`` as a child run and wait for its output."""

    step_id: str
    workflow: Any
    input: Any = None
    resource_id: str | None = attrs.field(default=None, kw_only=True)


StepCommand = Run | WaitFor | WaitUntil | Delay | Pause | Poll | Transaction | Child


@attrs.frozen(init=False)
class All:
    """Run several commands concurrently; yields their results in argument order."""

    commands: tuple[StepCommand, ...]

    def __init__(self, *commands: StepCommand) -> None:
        self.__attrs_init__(tuple(commands))


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
