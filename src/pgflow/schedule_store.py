"""The schedule store operations (SPEC §16), written once for every store over unit-of-work effects.

As ``locked.py`` does for runs: each operation is a generator that yields effects — lock a schedule,
lock the due ones, write one, add a run, … — and receives the answers; ``MemoryStore`` performs them
on its dictionaries under its lock, the Postgres stores as SQL inside one transaction
(``postgres/schedules.py``), so firing a tick — lock the due schedules (skipping those another engine
holds), insert their tick runs, move their next tick — is one transaction, written once. The rules
are the pure functions of ``schedules.py``. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import timedelta
from typing import Any

import attrs
import pendulum

from . import schedules as rules
from .arguments import shown
from .errors import ScheduleNotFoundError
from .locked import Notify
from .schedules import ScheduleRow
from .store import RunRow

__all__ = [
    "AddRun",
    "DeleteSchedule",
    "FireResult",
    "LockDueSchedules",
    "LockSchedule",
    "NextTick",
    "RunsByKeys",
    "ScheduleEffect",
    "ScheduleGen",
    "WriteSchedule",
    "delete",
    "fire_due",
    "not_found",
    "put",
    "set_paused",
]

DateTime = pendulum.DateTime


@attrs.frozen
class LockSchedule:
    """One schedule, locked for the rest of the operation → ``ScheduleRow | None``."""

    schedule_id: str


@attrs.frozen
class LockDueSchedules:
    """Up to ``limit`` active schedules whose next tick is at or before ``now``, earliest first,
    locked — skipping those another transaction holds — each with its workflow's registered run
    defaults → ``list[tuple[ScheduleRow, dict | None]]``."""

    now: DateTime
    limit: int


@attrs.frozen
class WriteSchedule:
    """Insert or replace a schedule → None."""

    row: ScheduleRow


@attrs.frozen
class DeleteSchedule:
    """Delete a (locked) schedule → None."""

    schedule_id: str


@attrs.frozen
class AddRun:
    """Insert a new run unless its id or idempotency key exists already → None."""

    row: RunRow


@attrs.frozen
class RunsByKeys:
    """The ids of the runs holding these idempotency keys → ``dict[key, run id]``."""

    keys: tuple[str, ...]


@attrs.frozen
class NextTick:
    """The earliest next tick of the active schedules → ``DateTime | None``."""


ScheduleEffect = (
    LockSchedule | LockDueSchedules | WriteSchedule | DeleteSchedule | AddRun | RunsByKeys | NextTick | Notify
)
ScheduleGen = Generator[ScheduleEffect, Any, Any]


@attrs.frozen
class FireResult:
    """What firing did: the runs it started, whether more schedules may be due (the ``limit`` was
    reached), and the earliest next tick of the active schedules afterwards."""

    started: tuple[str, ...] = ()
    more: bool = False
    next_tick_at: DateTime | None = None


def not_found(schedule_id: str) -> ScheduleNotFoundError:
    return ScheduleNotFoundError(f"unknown schedule {shown(schedule_id)}: no schedule has that id here")


def put(new: ScheduleRow) -> ScheduleGen:
    """Create or replace a schedule (``schedules.replaced``) → the row written. Workers learn of it
    within a second (they look for the next tick that often)."""
    existing = yield LockSchedule(new.schedule_id)
    row = rules.replaced(existing, new)
    yield WriteSchedule(row)
    return row


def set_paused(schedule_id: str, pause: bool, now: DateTime) -> ScheduleGen:
    """Pause or resume a schedule → the row written; ``ScheduleNotFoundError`` when it is missing."""
    row = yield LockSchedule(schedule_id)
    if row is None:
        raise not_found(schedule_id)
    changed = rules.paused(row, now) if pause else rules.resumed(row, now)
    if changed != row:
        yield WriteSchedule(changed)
    return changed


def delete(schedule_id: str) -> ScheduleGen:
    """Delete a schedule (its runs stay) → None; ``ScheduleNotFoundError`` when it is missing."""
    row = yield LockSchedule(schedule_id)
    if row is None:
        raise not_found(schedule_id)
    yield DeleteSchedule(schedule_id)
    return None


def fire_due(now: DateTime, on_time: timedelta, limit: int, new_id: Callable[[], str]) -> ScheduleGen:
    """Start the runs of the due ticks of up to ``limit`` due schedules and move their next tick past
    ``now`` (``schedules.due_ticks``), all in the caller's one transaction → ``FireResult``. A tick
    whose key a run holds already (another engine's clock was ahead) starts nothing more."""
    due = yield LockDueSchedules(now, limit)
    started: list[str] = []
    for row, settings in due:
        firing = rules.due_ticks(row, now, on_time)
        runs = [rules.tick_run(row, tick, settings, now, new_id()) for tick in firing.ticks]
        for run in runs:
            yield AddRun(run)
        holders: dict[str, str] = (
            (yield RunsByKeys(tuple(r.idempotency_key or "" for r in runs))) if runs else {}
        )
        started += [r.id for r in runs if holders.get(r.idempotency_key or "") == r.id]
        written = attrs.evolve(row, next_tick_at=firing.next_tick_at, updated_at=now)
        if runs:
            last = runs[-1].idempotency_key or ""
            written = attrs.evolve(written, last_tick_at=firing.ticks[-1], last_run_id=holders.get(last))
        yield WriteSchedule(written)
    if started:
        yield Notify("wake")
    next_tick = yield NextTick()
    return FireResult(tuple(started), len(due) >= limit, next_tick)
