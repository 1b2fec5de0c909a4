"""Cron expressions in IANA zones: the one seam to the cron library (cronsim), pure — times in, times out.

An expression has five fields (minute precision) or six (seconds first). Ticks are computed in the
schedule's zone with cronsim, which follows Debian's cron across daylight-saving changes: a job at a
specific time that falls in the hour skipped in spring runs right after the change, and one in the hour
repeated in autumn runs once; jobs that run more often than hourly keep their pace in absolute time.
Every time crosses this module as a UTC ``pendulum.DateTime``. cronsim is an optional extra
(``pgflow-engine[schedules]``), imported when a schedule is first checked.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pendulum

from .arguments import MAX_ID, shown
from .clock import ensure_utc
from .errors import ConfigurationError, InvalidArgumentError

__all__ = ["EXTRA", "CronSpec", "check_cron", "check_timezone", "explain"]

EXTRA = "pip install 'pgflow-engine[schedules]'"
MAX_CRON = 256
_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)  # where a new expression is tried (it must fire at all)
_SECOND = timedelta(seconds=1)
_LOCAL_ONLY = {"localtime", "posixrules", "factory"}  # names that mean a different zone on each machine


def _cronsim() -> Any:
    """The cronsim module, or a ConfigurationError saying how to install it."""
    try:
        import cronsim
    except ImportError:
        raise ConfigurationError(
            f"schedules need the cron library cronsim, which is not installed: {EXTRA}"
        ) from None
    return cronsim


def check_cron(value: object, name: str = "cron") -> str:
    """``value`` as a cron expression of five fields (minute precision) or six (seconds first), one
    that fires at least once; else InvalidArgumentError naming ``name`` and saying why."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CRON or not value.isascii():
        raise InvalidArgumentError(
            f"{name} must be a cron expression (a string of 5 or 6 fields, e.g. '0 9 * * 1-5'), "
            f"got {type(value).__name__}: {shown(value)}"
        )
    fields = len(value.split())
    if fields not in (5, 6):
        raise InvalidArgumentError(
            f"{name} must have 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds "
            f"first), got {fields}: {shown(value)}"
        )
    cronsim = _cronsim()
    try:
        next(cronsim.CronSim(value, _ANCHOR))
    except cronsim.CronSimError as exc:
        raise InvalidArgumentError(f"{name} is not a valid cron expression ({exc}): {shown(value)}") from None
    except StopIteration:
        raise InvalidArgumentError(f"{name} never fires: {shown(value)}") from None
    return " ".join(value.split())


def check_timezone(value: object, name: str = "timezone") -> str:
    """``value`` as an IANA zone name (``"UTC"``, ``"Europe/Paris"``); else InvalidArgumentError."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isascii():
        raise InvalidArgumentError(
            f"{name} must be an IANA time zone name such as 'Europe/Paris', got {type(value).__name__}: "
            f"{shown(value)}"
        )
    if value.lower() in _LOCAL_ONLY or _zone(value) is None:
        raise InvalidArgumentError(
            f"{name} must be an IANA time zone name such as 'UTC' or 'Europe/Paris', got {shown(value)}"
        )
    return value


@functools.lru_cache(maxsize=1024)  # bounded: names come from callers, unknown ones too
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def explain(expr: str) -> str | None:
    """A description of the expression in English ("At 09:00 on Monday through Friday"), or None
    when the library cannot describe it (or is not installed)."""
    try:
        text: str = _cronsim().CronSim(expr, _ANCHOR).explain()
    except Exception:
        return None
    return text


@attrs.frozen
class CronSpec:
    """A checked expression in a zone; every time in and out is UTC."""

    expr: str
    timezone: str

    def _zone(self) -> zoneinfo.ZoneInfo:
        zone = _zone(self.timezone)
        if zone is None:  # checked when the schedule was made: only a zone database that lost it
            raise InvalidArgumentError(f"unknown time zone {shown(self.timezone)}")
        return zone

    def _local(self, when: datetime) -> datetime:
        """``when`` (any aware time) as a plain stdlib datetime in the zone (fold set in a repeated
        hour), which is what cronsim expects (a pendulum DateTime would bring its own tzinfo)."""
        utc = when.astimezone(UTC)
        plain = datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC)
        return plain.astimezone(self._zone())

    def next_after(self, when: datetime) -> pendulum.DateTime | None:
        """The first tick strictly after ``when``; None when there is none in the next 50 years."""
        cronsim = _cronsim()
        found = cronsim.CronSim(self.expr, self._local(when))
        try:
            while True:
                tick = ensure_utc(next(found))
                if tick > when:  # Debian's rules count in local wall time: a start inside a repeated
                    return tick  # hour can see a tick of that hour's first pass, already gone
        except StopIteration:
            return None

    def back_from(self, when: datetime, count: int) -> pendulum.DateTime | None:
        """The ``count``-th tick before ``when`` (strictly), walking back; None when there are fewer.
        Used only to find where to start counting forward (see ``schedules.due_ticks``)."""
        cronsim = _cronsim()
        whole = when.astimezone(UTC).replace(microsecond=0)
        start = whole + _SECOND if when.microsecond else whole  # ticks fall on whole seconds
        found = cronsim.CronSim(self.expr, self._local(start), reverse=True)
        tick: pendulum.DateTime | None = None
        try:
            for _ in range(count):
                tick = ensure_utc(next(found))
        except StopIteration:
            return None
        return tick
