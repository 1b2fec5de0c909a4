"""Durable cron schedules (SPEC §16): the public values and the pure rules of ticks and catch-up.

A schedule row keeps its ``next_tick_at``; a worker that finds it due (``next_tick_at <= now``) starts
the runs of the ticks :func:`due_ticks` lists, each with the idempotency key :func:`tick_key`, and
moves ``next_tick_at`` past ``now`` — under the schedule's row lock, in one transaction
(``schedule_store.py``), so a tick starts one run however many engines look. A tick fired within
:data:`ON_TIME` of its time is on time (a worker's ordinary delay); older ones were missed while no
worker ran, and ``catch_up`` says which of those still start. No I/O and no clock here: ``now`` is a
parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Literal

import attrs
import pendulum

from . import transitions as tr
from .arguments import add_time, check_id, shown
from .cron import CronSpec, check_cron, check_timezone
from .definition import Workflow, WorkflowRef
from .durations import parse_duration
from .errors import InvalidArgumentError
from .store import NewRun, RunRow

__all__ = [
    "CATCH_UP",
    "MAX_CATCH_UP",
    "ON_TIME",
    "CatchUp",
    "Firing",
    "Schedule",
    "ScheduleInfo",
    "ScheduleRow",
    "check_catch_up",
    "check_schedules",
    "due_ticks",
    "new_row",
    "paused",
    "replaced",
    "resumed",
    "tick_key",
    "tick_run",
]

DateTime = pendulum.DateTime
CatchUp = Literal["latest", "all", "none"]
CATCH_UP: tuple[CatchUp, ...] = ("latest", "all", "none")
MAX_CATCH_UP = 1_000  # missed ticks started at most by catch_up="all" (the most recent ones)
ON_TIME = pendulum.duration(seconds=10)  # an engine's worker firing a tick this late is on time
_JUST_BEFORE = timedelta(microseconds=1)


def check_catch_up(value: object, name: str = "catch_up") -> CatchUp:
    if not isinstance(value, str) or value not in CATCH_UP:
        raise InvalidArgumentError(
            f"{name} must be one of {', '.join(repr(c) for c in CATCH_UP)}, got {shown(value)}"
        )
    return value


def _check_schedule_id(value: object) -> str:
    return check_id(value, "schedule_id")


def _check_workflow(value: object) -> Any:
    if isinstance(value, Workflow | WorkflowRef):
        return value
    return check_id(value, "workflow")


@attrs.frozen
class Schedule:
    """A schedule an ``Engine`` upserts when it starts (``Engine(schedules=[...])``): start a run of
    ``workflow`` with ``input`` at every tick of ``cron`` (5 fields, or 6 with seconds first) in
    ``timezone``; ``catch_up`` says which ticks missed while no worker ran still start. The cron
    expression, the zone and ``catch_up`` are checked here; the input when the engine starts."""

    schedule_id: str = attrs.field(converter=_check_schedule_id)
    workflow: Workflow[Any, Any] | WorkflowRef[Any, Any] | str = attrs.field(converter=_check_workflow)
    cron: str = attrs.field(converter=check_cron)
    input: Any = attrs.field(default=None, kw_only=True)
    timezone: str = attrs.field(default="UTC", kw_only=True, converter=check_timezone)
    catch_up: CatchUp = attrs.field(default="latest", kw_only=True, converter=check_catch_up)


def check_schedules(value: object, name: str = "schedules") -> tuple[Schedule, ...]:
    """An engine's ``schedules=``: an iterable of ``Schedule`` with distinct ids."""
    if isinstance(value, str | bytes | Schedule) or not isinstance(value, Iterable):
        raise InvalidArgumentError(
            f"{name} must be an iterable of pgflow.Schedule, got {type(value).__name__}: {shown(value)}"
        )
    found = tuple(value)
    seen: set[str] = set()
    for item in found:
        if not isinstance(item, Schedule):
            raise InvalidArgumentError(
                f"{name} must hold pgflow.Schedule objects, got {type(item).__name__}: {shown(item)}"
            )
        if item.schedule_id in seen:
            raise InvalidArgumentError(f"{name} has two schedules with id {item.schedule_id!r}")
        seen.add(item.schedule_id)
    return found


@attrs.frozen
class ScheduleInfo:
    """A schedule as stored: ``input`` is the stored (JSON) input; ``next_tick_at`` is None while it
    is paused; ``last_tick_at`` / ``last_run_id``: the last tick that started a run, and that run."""

    schedule_id: str
    workflow_id: str
    cron: str
    timezone: str
    input: Any
    catch_up: CatchUp
    paused: bool
    next_tick_at: DateTime | None
    last_tick_at: DateTime | None
    last_run_id: str | None


@attrs.frozen
class ScheduleRow:
    """What a store keeps about a schedule: its public fields and when it was created and changed."""

    schedule_id: str
    workflow_id: str
    cron: str
    timezone: str
    input: Any
    catch_up: CatchUp
    paused: bool
    next_tick_at: DateTime | None
    last_tick_at: DateTime | None
    last_run_id: str | None
    created_at: DateTime
    updated_at: DateTime

    @property
    def spec(self) -> CronSpec:
        return CronSpec(self.cron, self.timezone)

    def info(self) -> ScheduleInfo:
        fields = {f.name: getattr(self, f.name) for f in attrs.fields(ScheduleInfo)}
        return ScheduleInfo(**fields)


# -- the rules ----------------------------------------------------------------------------------------


def new_row(
    schedule_id: str, workflow_id: str, cron: str, timezone: str, stored_input: Any, catch_up: CatchUp,
    now: DateTime,
) -> ScheduleRow:  # fmt: skip
    """A new schedule, active from ``now``: its first tick is the first one after ``now``."""
    first = CronSpec(cron, timezone).next_after(now)
    if first is None:
        raise InvalidArgumentError(f"cron {cron!r} never fires again after {now.isoformat()}")
    return ScheduleRow(schedule_id, workflow_id, cron, timezone, stored_input, catch_up, False, first,
                       None, None, now, now)  # fmt: skip


def replaced(existing: ScheduleRow | None, new: ScheduleRow) -> ScheduleRow:
    """What ``create_schedule`` (or an engine starting) writes over ``existing``: the new definition.
    A paused schedule stays paused; with the same cron and zone it keeps its place (its next tick and
    its last run), so an engine that restarts misses nothing and repeats nothing; with another cron
    or zone it starts from the first tick after now, as a new one."""
    if existing is None:
        return new
    if existing.paused:
        next_tick = None
    elif (existing.cron, existing.timezone) == (new.cron, new.timezone):
        next_tick = existing.next_tick_at
    else:
        next_tick = new.next_tick_at
    return attrs.evolve(
        new, created_at=existing.created_at, paused=existing.paused, next_tick_at=next_tick,
        last_tick_at=existing.last_tick_at, last_run_id=existing.last_run_id,
    )  # fmt: skip


def paused(row: ScheduleRow, now: DateTime) -> ScheduleRow:
    """Start nothing until resumed (no next tick meanwhile)."""
    return attrs.evolve(row, paused=True, next_tick_at=None, updated_at=now)


def resumed(row: ScheduleRow, now: DateTime) -> ScheduleRow:
    """Continue from the first tick after ``now`` (the ticks of the pause are not caught up); a
    schedule that is not paused is left as it is."""
    if not row.paused:
        return row
    return attrs.evolve(row, paused=False, next_tick_at=row.spec.next_after(now), updated_at=now)


@attrs.frozen
class Firing:
    """The ticks to start now, oldest first, and the schedule's next tick after ``now``."""

    ticks: tuple[DateTime, ...]
    next_tick_at: DateTime | None


def due_ticks(row: ScheduleRow, now: DateTime, on_time: timedelta = ON_TIME) -> Firing:
    """The ticks of a due schedule to start at ``now``: every tick since ``next_tick_at`` that is on
    time (at most ``on_time`` old), and of the older, missed ones: the most recent 1,000 for
    ``catch_up="all"``, the most recent one for ``"latest"`` when no tick is on time (it is the most
    recent tick then), none for ``"none"``.

    Ticks are counted forward from ``next_tick_at`` (or, after a long gap, from just before the
    missed ticks the policy keeps, found by walking back from the on-time window), so the work is
    bounded by the policy, not by the length of the gap."""
    first = row.next_tick_at
    if row.paused or first is None or first > now:
        return Firing((), first)
    spec = row.spec
    window = now - on_time  # ticks at or after it are on time
    keep = {"all": MAX_CATCH_UP, "latest": 1, "none": 0}[row.catch_up]
    start = window if keep == 0 or window < first else (spec.back_from(window, keep) or first)
    start = max(start, first)
    ticks: list[DateTime] = []
    tick = spec.next_after(start - _JUST_BEFORE)
    while tick is not None and tick <= now:
        ticks.append(tick)
        tick = spec.next_after(tick)
    missed = [t for t in ticks if t < window]
    current = ticks[len(missed) :]
    if row.catch_up == "all":
        chosen = missed[-MAX_CATCH_UP:] + current
    elif row.catch_up == "latest" and not current:
        chosen = missed[-1:]
    else:
        chosen = current
    return Firing(tuple(chosen), tick)


def tick_key(schedule_id: str, tick: DateTime) -> str:
    """The idempotency key of a tick's run: ``schedule:{schedule_id}:{tick, ISO-8601 UTC}``."""
    return f"schedule:{schedule_id}:{tick.in_timezone('UTC').strftime('%Y-%m-%dT%H:%M:%SZ')}"


def tick_run(
    row: ScheduleRow, tick: DateTime, settings: dict[str, Any] | None, now: DateTime, run_id: str
) -> RunRow:
    """The run a tick starts: the schedule's workflow and input, the workflow's registered run
    defaults (retries, timeout, backoff: as ``start_workflow`` applies them), the tick's key."""
    defaults = settings or {}
    raw_timeout = defaults.get("timeout")
    timeout_at = add_time(now, parse_duration(raw_timeout), "timeout") if raw_timeout is not None else None
    new = NewRun(
        id=run_id, workflow_id=row.workflow_id, resource_id=None, input=row.input,
        max_retries=int(defaults.get("retries") or 0), retry_backoff=float(defaults.get("retry_backoff") or 1.0),
        idempotency_key=tick_key(row.schedule_id, tick), timeout_at=timeout_at, now=now,
    )  # fmt: skip
    return tr.new_row(new)
