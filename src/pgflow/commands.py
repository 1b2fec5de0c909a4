"""Step commands: the values a workflow generator ``yield``s.

Commands are frozen values; nothing runs when one is built. Each checks its arguments when it is
built (step ids, event names, functions, durations, times), so a mistake raises a named
``InvalidArgumentError`` / ``InvalidDurationError`` at the line that made it. Inside a workflow
that error escapes the generator, and the interpreter (``replay.py``) fails the run at once, not
retried, with a ``WorkflowDefinitionError``. Durations and times keep the value as written; the
interpreter parses them again when it records the step.

Commands are typed by what they give back (SPEC §17): ``Run[T]``, ``WaitFor[T]``, ... are iterable, so
``x = yield from Run("id", fn, *args)`` gives ``x`` the type of ``fn``'s result.
"""

# pyright: reportUnnecessaryIsInstance=false
# (arguments are checked at run time too: callers need not be type-checked)

from __future__ import annotations

import math
import zlib
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Self, TypeAlias, TypeVar, TypeVarTuple, overload

import attrs
import pendulum
import typing_extensions

from .arguments import (
    INT32_MAX,
    check_callable,
    check_id,
    check_int,
    check_number,
    check_optional_id,
    shown,
)
from .durations import DurationLike, WhenLike, check_duration, check_optional_duration, check_when
from .errors import InvalidArgumentError

__all__ = [
    "All",
    "Child",
    "Command",
    "Delay",
    "Flow",
    "Pause",
    "Poll",
    "PollResult",
    "Retry",
    "Run",
    "Sleep",
    "Step",
    "StepCommand",
    "Transaction",
    "WaitFor",
    "WaitUntil",
    "WorkflowLike",
    "Yieldable",
]

T = TypeVar("T")
# What a command gives back; a bare ``Run`` (in an annotation) is ``Run[Any]``.
T_co = typing_extensions.TypeVar("T_co", covariant=True, default=Any)
S = TypeVar("S")
I = typing_extensions.TypeVar("I", default=Any)  # noqa: E741 - a workflow's input type
O = typing_extensions.TypeVar("O", default=Any)  # noqa: E741 - a workflow's output type
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
R = typing_extensions.TypeVar("R", default=Any)  # the type of each result of All
Ts = TypeVarTuple("Ts")


class Yieldable(Generic[T_co]):
    """What a workflow yields: a step command or ``All``, typed by the value it gives back.

    Iterating one yields the command itself once and returns the value sent back, so
    ``x = yield from cmd`` is ``x = yield cmd`` at run time (the interpreter receives the command,
    and sends or throws into the workflow through the ``yield from``), while type checkers give
    ``x`` the type ``T_co``.
    """

    __slots__ = ()

    def __iter__(self) -> Generator[Self, Any, T_co]:
        value: T_co = yield self
        return value

    if TYPE_CHECKING:  # made by attrs for the commands with their own __init__ (pyright cannot see it)

        def __attrs_init__(self, *args: Any, **kwargs: Any) -> None: ...


class Step(Yieldable[T_co]):
    """A step command (everything but ``All``), typed by the value it gives back."""

    __slots__ = ()


class WorkflowLike(Generic[I, O]):
    """What ``Child`` and ``start_workflow`` accept besides an id: a ``Workflow`` or a ``WorkflowRef``
    (both defined in ``definition.py``, a layer above), typed by input ``I`` and output ``O``."""

    __slots__ = ()


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
class PollResult(Generic[T_co]):
    """What a ``Poll`` step yields back: ``data`` is what ``fn`` returned, ``None`` on a timeout."""

    timed_out: bool
    data: T_co | None = None


@attrs.frozen(init=False)
class Run(Step[T_co]):
    """Run ``fn(*args)`` (sync or ``async def``) as a recorded step; gives back what ``fn`` returns
    (awaited, for an ``async def``). Type checkers check ``args`` against ``fn``'s parameters."""

    step_id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    retry: Retry | None
    timeout: Any

    @overload
    def __init__(
        self,
        step_id: str,
        fn: Callable[[*Ts], Awaitable[T_co]],
        *args: *Ts,
        retry: Retry | None = None,
        timeout: DurationLike | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        step_id: str,
        fn: Callable[[*Ts], T_co],
        *args: *Ts,
        retry: Retry | None = None,
        timeout: DurationLike | None = None,
    ) -> None: ...

    def __init__(
        self,
        step_id: str,
        fn: Callable[..., Any],
        *args: object,
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


@attrs.frozen(init=False)
class WaitFor(Step[T_co]):
    """Wait for an event named ``event`` (from the run's mailbox); yields its data (structured by
    ``schema``), or ``None`` when ``timeout`` passes first."""

    step_id: str
    event: str
    timeout: Any = attrs.field(default=None, kw_only=True)
    schema: Any = attrs.field(default=None, kw_only=True)

    @overload
    def __init__(
        self: WaitFor[Any], step_id: str, event: str, *, timeout: None = None, schema: None = None
    ) -> None: ...

    @overload
    def __init__(
        self: WaitFor[Any | None],
        step_id: str,
        event: str,
        *,
        timeout: DurationLike | None,
        schema: None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: WaitFor[S],
        step_id: str,
        event: str,
        *,
        timeout: None = None,
        schema: type[S] | Callable[[Any], S],
    ) -> None: ...

    @overload
    def __init__(
        self: WaitFor[S | None],
        step_id: str,
        event: str,
        *,
        timeout: DurationLike | None,
        schema: type[S] | Callable[[Any], S],
    ) -> None: ...

    def __init__(self, step_id: str, event: str, *, timeout: Any = None, schema: Any = None) -> None:
        self.__attrs_init__(step_id, event, timeout=timeout, schema=schema)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_id(self.event, "event")
        check_optional_duration(self.timeout, "timeout")


@attrs.frozen
class WaitUntil(Step[None]):
    """Suspend until ``when`` (aware datetime, pendulum DateTime or ISO-8601 string)."""

    step_id: str
    when: WhenLike

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_when(self.when, "when")


@attrs.frozen
class Delay(Step[None]):
    """Suspend for ``duration`` (see ``parse_duration``)."""

    step_id: str
    duration: DurationLike

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_duration(self.duration, "duration")


Sleep = Delay


@attrs.frozen
class Pause(Step[None]):
    """Suspend until ``resume_workflow`` or ``fast_forward_workflow``."""

    step_id: str

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)


@attrs.frozen(init=False)
class Poll(Step[PollResult[T_co]]):
    """Call ``fn()`` now and every ``interval`` until it returns something other than None/False;
    gives back a ``PollResult[T]``, ``T`` being what ``fn`` returns (without ``None``)."""

    step_id: str
    fn: Callable[[], Any]
    interval: Any = attrs.field(default="30s", kw_only=True)
    timeout: Any = attrs.field(default=None, kw_only=True)

    @overload
    def __init__(
        self,
        step_id: str,
        fn: Callable[[], Awaitable[T_co | None]],
        *,
        interval: DurationLike = "30s",
        timeout: DurationLike | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        step_id: str,
        fn: Callable[[], T_co | None],
        *,
        interval: DurationLike = "30s",
        timeout: DurationLike | None = None,
    ) -> None: ...

    def __init__(
        self, step_id: str, fn: Callable[[], Any], *, interval: Any = "30s", timeout: Any = None
    ) -> None:
        self.__attrs_init__(step_id, fn, interval=interval, timeout=timeout)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_callable(self.fn, "fn")
        check_duration(self.interval, "interval")
        check_optional_duration(self.timeout, "timeout")


@attrs.frozen(init=False)
class Transaction(Step[T_co]):
    """Run ``fn(conn, *args)`` inside the transaction that records the step (exactly once); gives
    back what ``fn`` returns. ``conn`` is a psycopg connection (typed ``Any`` here)."""

    step_id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]

    @overload
    def __init__(self, step_id: str, fn: Callable[[Any, *Ts], Awaitable[T_co]], *args: *Ts) -> None: ...

    @overload
    def __init__(self, step_id: str, fn: Callable[[Any, *Ts], T_co], *args: *Ts) -> None: ...

    def __init__(self, step_id: str, fn: Callable[..., Any], *args: object) -> None:
        self.__attrs_init__(step_id, fn, args)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        check_callable(self.fn, "fn")


@attrs.frozen(init=False)
class Child(Step[T_co]):
    """Start ``workflow`` as a child run and wait for its output (typed by the workflow's output
    type; ``Any`` for a workflow given by id). ``input`` is checked against its input type."""

    step_id: str
    workflow: Any
    input: Any = None
    resource_id: str | None = attrs.field(default=None, kw_only=True)

    @overload
    def __init__(
        self: Child[O],
        step_id: str,
        workflow: WorkflowLike[I, O],
        input: I | Mapping[str, Any] = ...,
        *,
        resource_id: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Child[Any], step_id: str, workflow: str, input: Any = None, *, resource_id: str | None = None
    ) -> None: ...

    def __init__(self, step_id: str, workflow: Any, input: Any = None, *, resource_id: Any = None) -> None:
        self.__attrs_init__(step_id, workflow, input, resource_id=resource_id)

    def __attrs_post_init__(self) -> None:
        _check_step_id(self.step_id)
        _check_child_workflow(self.workflow)
        check_optional_id(self.resource_id, "resource_id")


StepCommand: TypeAlias = (
    Run[Any] | WaitFor[Any] | WaitUntil | Delay | Pause | Poll[Any] | Transaction[Any] | Child[Any]
)


@attrs.frozen(init=False)
class All(Yieldable[list[R]]):
    """Run several commands concurrently; yields the list of their results, in argument order.

    Typed as ``list[A | B | ...]`` of the commands' result types (a list at run time, as the
    interpreter gives it back): ``list[T]`` when they all give ``T``."""

    commands: tuple[StepCommand, ...]

    @overload
    def __init__(self: All[A], c1: Step[A], /) -> None: ...

    @overload
    def __init__(self: All[A | B], c1: Step[A], c2: Step[B], /) -> None: ...

    @overload
    def __init__(self: All[A | B | C], c1: Step[A], c2: Step[B], c3: Step[C], /) -> None: ...

    @overload
    def __init__(self: All[A | B | C | D], c1: Step[A], c2: Step[B], c3: Step[C], c4: Step[D], /) -> None: ...

    @overload
    def __init__(
        self: All[A | B | C | D | E], c1: Step[A], c2: Step[B], c3: Step[C], c4: Step[D], c5: Step[E], /
    ) -> None: ...

    @overload
    def __init__(self: All[A], *commands: Step[A]) -> None: ...

    def __init__(self, *commands: Any) -> None:
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


Command: TypeAlias = StepCommand | All[Any]

Flow: TypeAlias = Generator[Command, Any, T]
"""The type of a workflow generator (or of a helper used with ``yield from``) returning ``T``:
``def onboard(ctx: Context[Signup]) -> Flow[dict[str, str]]``."""

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
