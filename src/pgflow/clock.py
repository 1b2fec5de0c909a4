"""Where pgflow gets the time: the :class:`Clock` protocol, the system clock, and UTC normalisation.

Every time the engine uses comes from an injected clock (SPEC §4), so tests can simulate it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import pendulum

__all__ = ["Clock", "SystemClock", "ensure_utc"]


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now() -> pendulum.DateTime`` (timezone-aware, UTC)."""

    def now(self) -> pendulum.DateTime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> pendulum.DateTime:
        return pendulum.now("UTC")

    def __repr__(self) -> str:
        return "SystemClock()"


def ensure_utc(dt: datetime) -> pendulum.DateTime:
    """``dt`` as a UTC ``pendulum.DateTime`` (same instant); a naive ``dt`` is taken to be UTC already."""
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        # stdlib arithmetic keeps the instant exactly as ``dt`` defines it (fold, zone gaps)
        dt = dt.astimezone(UTC)
    return pendulum.datetime(
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond, tz="UTC"
    )
