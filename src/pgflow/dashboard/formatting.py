"""How values read on the pages: times, durations, JSON (Jinja filters; pure functions)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

__all__ = ["FILTERS", "clock", "duration", "pretty_json", "short_id", "when"]

JSON_LIMIT = 20_000  # characters: a huge output is cut, not shipped whole on every refresh


def when(value: datetime | None) -> str:
    """A UTC time to the second, e.g. ``2024-01-02 12:00:03``; an em dash for none."""
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S")


def clock(value: datetime | None) -> str:
    """The time of day to the millisecond (steps of one run are close together); full time in a title."""
    if value is None:
        return "—"
    return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def when_iso(value: datetime | None) -> str:
    """The machine-readable form for ``<time datetime=…>``."""
    return "" if value is None else value.isoformat()


def duration(seconds: float | None) -> str:
    """A duration at a sensible precision: ``0 ms``, ``350 ms``, ``4.2 s``, ``3 min 4 s``, ``2 h 5 min``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def pretty_json(value: Any) -> str:
    """Indented JSON (non-JSON values as their ``str``), cut at ``JSON_LIMIT`` characters."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    if len(text) > JSON_LIMIT:
        return text[:JSON_LIMIT] + f"\n… ({len(text) - JSON_LIMIT:,} more characters)"
    return text


def short_id(value: str) -> str:
    """The first 8 characters of a long id (the full id goes in a title)."""
    return value if len(value) <= 12 else value[:8] + "…"


FILTERS = {
    "when": when,
    "when_iso": when_iso,
    "clock": clock,
    "duration": duration,
    "pretty_json": pretty_json,
    "short_id": short_id,
}
