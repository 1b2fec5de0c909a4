"""Checking arguments at the edge: ids, integers, times, and how a bad value is shown in a message.

Every public function and constructor validates what it is given with these helpers, so bad input
gets a named :class:`~pgflow.errors.PgflowError` whose message names the argument and shows at most
200 characters of the value (``reprlib``), before anything is stored (SPEC §13).
"""

from __future__ import annotations

import itertools
import math
import reprlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pendulum

from pgflow.errors import InvalidArgumentError, InvalidDurationError, PgflowError
from pgflow.records import RunStatus

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_ID",
    "MAX_SHOWN",
    "MAX_SPAN",
    "add_time",
    "check_callable",
    "check_clock",
    "check_id",
    "check_int",
    "check_number",
    "check_optional_id",
    "check_statuses",
    "clip",
    "escape_text",
    "id_problem",
    "shown",
]

MAX_ID = 256
MAX_SHOWN = 200
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_SPAN = datetime.max - datetime.min
"""The longest span that can be added to any time at all; a longer duration always overflows."""
MAX_STATUSES = 100  # a statuses/until collection longer than this is a mistake (there are 6 statuses)

_repr = reprlib.Repr()
_repr.maxstring = 120
_repr.maxother = 120
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _repr.maxfrozenset = 6


def shown(value: object) -> str:
    """``value`` for an error message: a ``reprlib`` repr, at most :data:`MAX_SHOWN` characters,
    whatever its size or depth (never raises: a broken ``__repr__`` shows the type)."""
    try:
        text = _repr.repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    text = escape_text(text)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    """Free text for an error message (e.g. another exception's message): escaped, at most ``limit``
    characters."""
    text = escape_text(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def escape_text(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped as ``repr`` shows them (``\\x00``, ``\\ud800``),
    so PostgreSQL can store it (text and jsonb refuse both)."""
    if text.isascii():
        return text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id (a non-empty str of at most 256 characters, without NUL or
    lone surrogates), or None when it is one."""
    if type(value) is str and 0 < len(value) <= MAX_ID and value.isascii() and "\x00" not in value:
        return None  # the common case, checked for every step a workflow yields: keep it cheap
    if not isinstance(value, str):
        return f"got {type(value).__name__}"
    if not value:
        return "got an empty string"
    if len(value) > MAX_ID:
        return f"got {len(value)} characters"
    if "\x00" in value:
        return "got a NUL character (\\x00)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "got a lone surrogate (not valid UTF-8)"
    return None


def check_id(value: object, name: str, error: type[PgflowError] = InvalidArgumentError) -> str:
    """``value`` as an id, else ``error`` naming ``name``, saying why and showing the value."""
    problem = id_problem(value)
    if problem is not None:
        raise error(
            f"{name} must be a string of 1-{MAX_ID} characters without NUL or lone surrogates, "
            f"{problem}: {shown(value)}"
        )
    assert isinstance(value, str)
    return value


def check_optional_id(value: object, name: str) -> str | None:
    return None if value is None else check_id(value, name)


def check_int(
    value: object,
    name: str,
    low: int = 0,
    high: int = INT32_MAX,
    error: type[PgflowError] = InvalidArgumentError,
) -> int:
    """``value`` as an int in ``low..high`` (bools are not ints here), else ``error``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{name} must be an int, got {type(value).__name__}: {shown(value)}")
    if not low <= value <= high:
        raise error(f"{name} must be between {low} and {high}, got {shown(value)}")
    return int(value)


def check_number(
    value: object, name: str, low: float, high: float = math.inf, *, above: bool = False
) -> float:
    """``value`` as a finite float in ``low..high`` (or above ``low`` when ``above``), else
    InvalidArgumentError. Ints are fine, bools are not."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be a number, got {type(value).__name__}: {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    too_low = number <= low if above else number < low
    if not math.isfinite(number) or too_low or number > high:
        bounds = f"above {low}" if above else f"at least {low}"
        bounds += f" and at most {high}" if math.isfinite(high) else ""
        raise InvalidArgumentError(f"{name} must be a finite number {bounds}, got {shown(value)}")
    return number


def check_callable(value: object, name: str) -> Callable[..., Any]:
    """``value`` if it can be called, else InvalidArgumentError (e.g. ``Run("x", fn(5))``)."""
    if not callable(value):
        raise InvalidArgumentError(f"{name} must be callable, got {type(value).__name__}: {shown(value)}")
    return value


def check_clock(value: object, name: str = "clock") -> Any:
    """``value`` as a clock: anything with a callable ``now()`` (SPEC §4)."""
    if not callable(getattr(value, "now", None)):
        raise InvalidArgumentError(
            f"{name} must have a now() method returning a pendulum DateTime, got {type(value).__name__}: "
            f"{shown(value)}"
        )
    return value


def check_statuses(value: object, name: str) -> tuple[str, ...]:
    """Run statuses given as a str, a RunStatus or an iterable of them, as their string values.

    Anything else (``5``, ``None``, a mapping, bytes, an unknown name) is an InvalidArgumentError.
    """
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | bytearray | Mapping):
        items = list(itertools.islice(value, MAX_STATUSES + 1))
        if len(items) > MAX_STATUSES:
            raise InvalidArgumentError(
                f"{name} must hold at most {MAX_STATUSES} statuses, got {shown(value)}"
            )
    else:
        raise InvalidArgumentError(
            f"{name} must be a run status or an iterable of them, got {type(value).__name__}: {shown(value)}"
        )
    return tuple(_status(item, name) for item in items)


def _status(item: object, name: str) -> str:
    known = ", ".join(s.value for s in RunStatus)
    if not isinstance(item, str):
        raise InvalidArgumentError(f"{name} must hold run statuses ({known}), got {shown(item)}")
    try:
        return RunStatus(item).value
    except ValueError:
        raise InvalidArgumentError(f"{name}: unknown run status {shown(item)} (known: {known})") from None


def add_time(now: datetime, span: timedelta, name: str = "duration") -> pendulum.DateTime:
    """``now + span``, or InvalidDurationError when the result is past year 9999 (or before year 1)."""
    try:
        result = now + span
    except OverflowError:
        raise InvalidDurationError(
            f"Invalid duration: {name} of {shown(span)} reaches past year 9999 from {now.isoformat()}"
        ) from None
    return result  # type: ignore[return-value]
