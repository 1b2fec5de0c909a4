"""Durations and points in time as users write them: ``"1h30m"``, ``{"days": 2}``, ISO-8601 strings.

Owns :func:`parse_duration` (SPEC §6), :func:`to_seconds` and :func:`parse_when`, and their checked
forms for a named argument (:func:`check_duration`, :func:`check_when`); values only, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import pendulum

from pgflow.arguments import MAX_SPAN, clip, shown
from pgflow.clock import ensure_utc
from pgflow.errors import InvalidArgumentError, InvalidDurationError

__all__ = [
    "DurationLike",
    "WhenLike",
    "check_duration",
    "check_optional_duration",
    "check_when",
    "parse_duration",
    "parse_when",
    "to_seconds",
]

DurationLike = timedelta | int | float | str | Mapping[str, int | float]
"""Anything :func:`parse_duration` accepts (``pendulum.Duration`` is a ``timedelta``)."""

WhenLike = datetime | str
"""Anything :func:`parse_when` accepts (``pendulum.DateTime`` is a ``datetime``)."""

_US_PER = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_UNITS: dict[str, int] = {
    alias: _US_PER[base]
    for base, aliases in {
        "ms": ("ms", "msec", "msecs", "millisecond", "milliseconds"),
        "s": ("s", "sec", "secs", "second", "seconds"),
        "m": ("m", "min", "mins", "minute", "minutes"),
        "h": ("h", "hr", "hrs", "hour", "hours"),
        "d": ("d", "day", "days"),
        "w": ("w", "wk", "wks", "week", "weeks"),
    }.items()
    for alias in aliases
}
_DICT_KEYS: dict[str, int] = {
    "weeks": _US_PER["w"],
    "days": _US_PER["d"],
    "hours": _US_PER["h"],
    "minutes": _US_PER["m"],
    "seconds": _US_PER["s"],
    "milliseconds": _US_PER["ms"],
}
_PAIR = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-zA-Z]+)\s*")
_PREFIX = "Invalid duration:"  # every InvalidDurationError message starts so (SPEC §6)
_HINT = "expected e.g. '30s', '5m', '1h30m', '2 days 12 hours', seconds as a number, or a timedelta"


def _invalid(value: object, why: str = _HINT) -> InvalidDurationError:
    return InvalidDurationError(f"Invalid duration: {shown(value)} ({why})")


def _positive(micros: int, original: object) -> pendulum.Duration:
    if micros <= 0:
        raise InvalidDurationError("Invalid duration: must be a positive value")
    try:
        return pendulum.Duration(microseconds=micros)
    except OverflowError:
        raise _invalid(original, "too large") from None


def _number_micros(value: object, scale: int, original: object) -> int:
    """``value`` units of ``scale`` microseconds each, rounded to a whole microsecond."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(original)
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(original, "not a finite number")
    return round(Decimal(value) * scale)


def _parse_string(text: str) -> int:
    if not text.strip():
        raise InvalidDurationError("Invalid duration: empty string")
    total, pos = 0, 0
    while pos < len(text):
        match = _PAIR.match(text, pos)
        if match is None:
            raise _invalid(text)
        number, unit = match.groups()
        scale = _UNITS.get(unit.lower())
        if scale is None:
            raise _invalid(text, f"unknown unit {shown(unit)}")
        total += round(Decimal(number) * scale)
        pos = match.end()
    return total


def _parse_mapping(value: Mapping[object, object]) -> int:
    total = 0
    for key, amount in value.items():
        scale = _DICT_KEYS.get(key) if isinstance(key, str) else None
        if scale is None:
            raise _invalid(value, f"unknown key {shown(key)}; use {', '.join(_DICT_KEYS)}")
        total += _number_micros(amount, scale, value)
    return total


def parse_duration(value: object) -> pendulum.Duration:
    """Parse a duration (SPEC §6) into a positive ``pendulum.Duration``.

    Raises :class:`~pgflow.errors.InvalidDurationError` (a ``ValueError``) for anything else.
    """
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        if isinstance(value, pendulum.Duration) and micros > 0:
            return value
        return _positive(micros, value)
    if isinstance(value, str):
        return _positive(_parse_string(value), value)
    if isinstance(value, Mapping):
        return _positive(_parse_mapping(value), value)
    return _positive(_number_micros(value, _US_PER["s"], value), value)


def check_duration(value: object, name: str) -> pendulum.Duration:
    """``value`` parsed as the duration argument ``name``: an :class:`InvalidDurationError` names
    ``name``, and a span longer than the whole range of datetimes (it cannot be added to any time,
    e.g. ``"100000000 weeks"``) is rejected too."""
    try:
        span = parse_duration(value)
    except InvalidDurationError as exc:  # "Invalid duration: ..." -> "Invalid duration for timeout: ..."
        raise InvalidDurationError(str(exc).replace(_PREFIX, f"{_PREFIX[:-1]} for {name}:", 1)) from None
    if span > MAX_SPAN:
        raise InvalidDurationError(
            f"{_PREFIX[:-1]} for {name}: {shown(value)} reaches past year 9999 from any time"
        )
    return span


def check_optional_duration(value: object, name: str) -> pendulum.Duration | None:
    return None if value is None else check_duration(value, name)


def check_when(value: object, name: str) -> pendulum.DateTime:
    """``value`` parsed as the point-in-time argument ``name`` (an InvalidArgumentError names it)."""
    try:
        return parse_when(value)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{name}: {exc}") from None


def to_seconds(value: object) -> float:
    """Seconds in a duration: a ``timedelta`` as is (any sign), anything else via :func:`parse_duration`."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return parse_duration(value).total_seconds()


def parse_when(value: object) -> pendulum.DateTime:
    """A point in time as a UTC ``pendulum.DateTime``.

    Accepts an aware ``datetime``, a ``pendulum.DateTime`` or an ISO-8601 string; naive values mean
    UTC, and a date alone means its midnight UTC. Time-only strings are rejected. Anything else raises :class:`~pgflow.errors.InvalidArgumentError` ("Invalid time: ...").
    """
    if isinstance(value, datetime):
        try:
            return ensure_utc(value)
        except OverflowError:
            raise InvalidArgumentError(f"Invalid time: {shown(value)} (out of range in UTC)") from None
    if isinstance(value, str):
        try:
            # exact=True: a time-only string must not be completed with today's date (a clock read)
            parsed = pendulum.parse(value.strip(), tz="UTC", exact=True)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidArgumentError(f"Invalid time: {shown(value)} ({clip(str(exc))})") from None
        if isinstance(parsed, pendulum.DateTime):
            return ensure_utc(parsed)
        if isinstance(parsed, pendulum.Date):  # a date alone means its midnight, UTC
            return pendulum.datetime(parsed.year, parsed.month, parsed.day, tz="UTC")
    raise InvalidArgumentError(
        f"Invalid time: {shown(value)} (expected an aware datetime, a pendulum DateTime or an ISO-8601 string)"
    )
