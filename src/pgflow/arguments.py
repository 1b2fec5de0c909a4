"""Checking arguments at the edge: ids, integers, times, and how a bad value is shown in a message.

Every public function and constructor validates what it is given with these helpers, so bad input
gets a named :class:`~pgflow.errors.PgflowError` whose message names the argument and shows at most
200 characters of the value (``reprlib``), before anything is stored (SPEC §13).
"""

from __future__ import annotations

import reprlib
from datetime import datetime, timedelta

import pendulum

from pgflow.errors import InvalidArgumentError, InvalidDurationError, PgflowError

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "MAX_ID",
    "MAX_SHOWN",
    "add_time",
    "check_id",
    "check_int",
    "check_optional_id",
    "escape_text",
    "id_problem",
    "shown",
]

MAX_ID = 256
MAX_SHOWN = 200
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

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


def escape_text(text: str) -> str:
    """``text`` with NUL and lone surrogates escaped as ``repr`` shows them (``\\x00``, ``\\ud800``),
    so PostgreSQL can store it (text and jsonb refuse both)."""
    if text.isascii():
        return text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id (a non-empty str of at most 256 characters, without NUL or
    lone surrogates), or None when it is one."""
    if not isinstance(value, str):
        return f"must be a str, got {type(value).__name__}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID:
        return f"must be at most {MAX_ID} characters, got {len(value)}"
    if "\x00" in value:
        return "must not contain NUL (\\x00)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain lone surrogates (it is not valid UTF-8)"
    return None


def check_id(value: object, name: str, error: type[PgflowError] = InvalidArgumentError) -> str:
    """``value`` as an id, else ``error`` naming ``name`` and showing the value."""
    problem = id_problem(value)
    if problem is not None:
        raise error(f"{name} {problem}: {shown(value)}")
    assert isinstance(value, str)
    return value


def check_optional_id(value: object, name: str) -> str | None:
    return None if value is None else check_id(value, name)


def check_int(value: object, name: str, low: int = 0, high: int = INT32_MAX) -> int:
    """``value`` as an int in ``low..high`` (bools are not ints here), else InvalidArgumentError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an int, got {type(value).__name__}: {shown(value)}")
    if not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be between {low} and {high}, got {shown(value)}")
    return int(value)


def add_time(now: datetime, span: timedelta, name: str = "duration") -> pendulum.DateTime:
    """``now + span``, or InvalidDurationError when the result is past year 9999 (or before year 1)."""
    try:
        result = now + span
    except OverflowError:
        raise InvalidDurationError(
            f"Invalid duration: {name} of {shown(span)} reaches past year 9999 from {now.isoformat()}"
        ) from None
    return result  # type: ignore[return-value]
