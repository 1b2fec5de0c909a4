"""The schedule operations of the Postgres stores (SPEC §16), as generators of SQL effects.

The operations themselves are ``pgflow.schedule_store``'s (written once for every store); here their
unit-of-work effects become SQL — each operation one transaction (``uow.as_sql``: notifications sent
just before COMMIT) — and schedule rows become values. ``PostgresStore`` and ``AsyncPostgresStore``
run these with their executors, one line per method.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pendulum

from pgflow import schedule_store as ops
from pgflow.schedule_store import FireResult
from pgflow.schedules import ScheduleRow

from .rows import json_value, pg_time, run_params
from .sqlgen import Rows, Send, SqlGen
from .uow import Channels, as_sql

__all__ = [
    "delete_schedule",
    "fire_schedules",
    "get_schedule",
    "list_schedules",
    "next_schedule_tick",
    "put_schedule",
    "set_schedule_paused",
]

DateTime = pendulum.DateTime


def put_schedule(row: ScheduleRow, channels: Channels) -> SqlGen[ScheduleRow]:
    written: ScheduleRow = yield from as_sql(ops.put(row), channels, _perform)
    return written


def set_schedule_paused(
    schedule_id: str, paused: bool, now: DateTime, channels: Channels
) -> SqlGen[ScheduleRow]:
    written: ScheduleRow = yield from as_sql(ops.set_paused(schedule_id, paused, now), channels, _perform)
    return written


def delete_schedule(schedule_id: str, channels: Channels) -> SqlGen[None]:
    yield from as_sql(ops.delete(schedule_id), channels, _perform)


def fire_schedules(now: DateTime, on_time: timedelta, limit: int, channels: Channels) -> SqlGen[FireResult]:
    fired: FireResult = yield from as_sql(ops.fire_due(now, on_time, limit, _new_id), channels, _perform)
    return fired


def _new_id() -> str:
    return str(uuid.uuid4())


def get_schedule(schedule_id: str) -> SqlGen[ScheduleRow | None]:
    found = yield Rows("get_schedule", {"id": schedule_id})
    return schedule_from(found[0]) if found else None


def list_schedules() -> SqlGen[list[ScheduleRow]]:
    return [schedule_from(r) for r in (yield Rows("list_schedules"))]


def next_schedule_tick() -> SqlGen[DateTime | None]:
    found = yield Rows("next_schedule_tick")
    return _utc(found[0]["next"]) if found else None


# -- the effects as SQL -------------------------------------------------------------------------------


def _perform(effect: ops.ScheduleEffect) -> SqlGen[Any]:
    if isinstance(effect, ops.LockSchedule):
        found = yield Rows("lock_schedule", {"id": effect.schedule_id})
        return schedule_from(found[0]) if found else None
    if isinstance(effect, ops.LockDueSchedules):
        found = yield Rows("lock_due_schedules", {"now": pg_time(effect.now), "limit": effect.limit})
        return [(schedule_from(r), dict(r["settings"]) if r["settings"] is not None else None) for r in found]
    if isinstance(effect, ops.RunsByKeys):
        found = yield Rows("runs_by_keys", {"keys": list(effect.keys)})
        return {r["idempotency_key"]: r["id"] for r in found}
    if isinstance(effect, ops.NextTick):
        found = yield Rows("next_schedule_tick")
        return _utc(found[0]["next"]) if found else None
    if isinstance(effect, ops.WriteSchedule):
        yield Send("write_schedule", schedule_params(effect.row))
    elif isinstance(effect, ops.DeleteSchedule):
        yield Send("delete_schedule", {"id": effect.schedule_id})
    elif isinstance(effect, ops.AddRun):
        yield Send(
            "insert_run", run_params(effect.row)
        )  # the one copy of the run insert (ON CONFLICT DO NOTHING)
    return None


# -- rows to values ----------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> DateTime | None:
    return None if value is None else pendulum.instance(value).in_timezone("UTC")


def schedule_from(r: Mapping[str, Any]) -> ScheduleRow:
    """A ``schedules`` row as a ScheduleRow (times as UTC pendulum DateTimes)."""
    return ScheduleRow(
        schedule_id=r["id"], workflow_id=r["workflow_id"], cron=r["cron"], timezone=r["timezone"],
        input=r["input"], catch_up=r["catch_up"], paused=r["paused"], next_tick_at=_utc(r["next_tick_at"]),
        last_tick_at=_utc(r["last_tick_at"]), last_run_id=r["last_run_id"],
        created_at=pendulum.instance(r["created_at"]).in_timezone("UTC"),
        updated_at=pendulum.instance(r["updated_at"]).in_timezone("UTC"),
    )  # fmt: skip


def schedule_params(row: ScheduleRow) -> dict[str, Any]:
    return {
        "id": row.schedule_id, "workflow_id": row.workflow_id, "cron": row.cron, "timezone": row.timezone,
        "input": json_value(row.input), "catch_up": row.catch_up, "paused": row.paused,
        "next_tick_at": pg_time(row.next_tick_at), "last_tick_at": pg_time(row.last_tick_at),
        "last_run_id": row.last_run_id, "created_at": pg_time(row.created_at),
        "updated_at": pg_time(row.updated_at),
    }  # fmt: skip
