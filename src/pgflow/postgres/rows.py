"""Conversions between the store's values (RunRow, StepRecord, Event) and Postgres rows/parameters.

Rows are read with ``dict_row``; times come back as UTC pendulum DateTimes; JSON goes out as
``Json``/``Jsonb`` dumped by :func:`pgflow.serde.dumps`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, overload

import pendulum
from psycopg.types.json import Json, Jsonb

from pgflow import serde
from pgflow.records import Event, RunError, RunStatus, StepRecord, Waiting
from pgflow.store import RunRow

__all__ = [
    "error_json",
    "event_from",
    "json_value",
    "jsonb",
    "pg_time",
    "run_from",
    "run_params",
    "step_from",
    "steps_json",
]

DateTime = pendulum.DateTime
Row = Mapping[str, Any]


def jsonb(value: Any) -> Jsonb | None:
    """``value`` as a jsonb parameter (errors, step lists); None is stored as SQL NULL."""
    return None if value is None else Jsonb(value, dumps=serde.dumps)


def json_value(value: Any) -> Json | None:
    """A workflow value (input, output, event data) as a json parameter: json keeps the text as
    written, so dict key order survives the round trip (jsonb would sort the keys)."""
    return None if value is None else Json(value, dumps=serde.dumps)


def _time(value: datetime | str | None) -> DateTime | None:
    """A timestamptz read back (or its ISO text, from a json row) as a UTC pendulum DateTime,
    built directly: ``pendulum.instance`` costs ~9 µs a value, and a run row has a dozen."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return DateTime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond,
        tzinfo=pendulum.UTC,
    )  # fmt: skip


@overload
def pg_time(value: datetime) -> datetime: ...


@overload
def pg_time(value: None) -> None: ...


def pg_time(value: datetime | None) -> datetime | None:
    """A time as a query parameter: a plain UTC ``datetime``. psycopg dumps a datetime by
    subtracting an epoch from it, which a pendulum DateTime turns into a slow ``Interval``."""
    if value is None or type(value) is datetime or value.tzinfo is None:
        return value
    offset = value.utcoffset()
    plain = datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, UTC
    )
    return plain - offset if offset else plain


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def error_json(error: RunError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "type": error.type,
        "message": error.message,
        "traceback": error.traceback,
        "step_id": error.step_id,
    }


def _error(data: Any) -> RunError | None:
    if data is None:
        return None
    return RunError(data["type"], data["message"], data.get("traceback"), data.get("step_id"))


def run_params(row: RunRow) -> dict[str, Any]:
    """Every column of ``runs`` as query parameters."""
    w = row.waiting
    return {
        "id": row.id, "workflow_id": row.workflow_id, "resource_id": row.resource_id,
        "status": row.status.value, "input": json_value(row.input), "output": json_value(row.output),
        "error": jsonb(error_json(row.error)),
        "current_step_id": row.current_step_id,
        "waiting_step_id": w.step_id if w else None, "waiting_kind": w.kind if w else None,
        "waiting_event": w.event if w else None, "waiting_wake_at": pg_time(w.wake_at) if w else None,
        "wake_at": pg_time(row.wake_at), "due_at": pg_time(row.due_at), "held": row.held,
        "retry_count": row.retry_count, "max_retries": row.max_retries, "retry_backoff": row.retry_backoff,
        "idempotency_key": row.idempotency_key, "created_at": pg_time(row.created_at),
        "updated_at": pg_time(row.updated_at), "paused_at": pg_time(row.paused_at),
        "resumed_at": pg_time(row.resumed_at), "completed_at": pg_time(row.completed_at),
        "timeout_at": pg_time(row.timeout_at), "lease_owner": row.lease_owner, "lease_token": row.lease_token,
        "lease_expires_at": pg_time(row.lease_expires_at), "mailbox_seq": row.mailbox_seq,
        "parent_run_id": row.parent_run_id, "parent_step_id": row.parent_step_id,
        "priority": row.priority, "concurrency_key": row.concurrency_key, "slot_held": row.slot_held,
        "parked": row.parked,
    }  # fmt: skip


def _waiting(r: Row) -> Waiting | None:
    if r["waiting_step_id"] is None:
        return None
    return Waiting(r["waiting_step_id"], r["waiting_kind"], r["waiting_event"], _time(r["waiting_wake_at"]))


def run_from(r: Row) -> RunRow:
    """A ``runs`` row as a RunRow."""
    created, updated = _time(r["created_at"]), _time(r["updated_at"])
    assert created is not None and updated is not None
    return RunRow(
        id=r["id"], workflow_id=r["workflow_id"], resource_id=r["resource_id"], status=RunStatus(r["status"]),
        input=r["input"], created_at=created, updated_at=updated, output=r["output"], error=_error(r["error"]),
        current_step_id=r["current_step_id"], waiting=_waiting(r), wake_at=_time(r["wake_at"]),
        due_at=_time(r["due_at"]), held=r["held"], retry_count=r["retry_count"], max_retries=r["max_retries"],
        retry_backoff=r["retry_backoff"], idempotency_key=r["idempotency_key"], paused_at=_time(r["paused_at"]),
        resumed_at=_time(r["resumed_at"]), completed_at=_time(r["completed_at"]), timeout_at=_time(r["timeout_at"]),
        lease_owner=r["lease_owner"], lease_token=r["lease_token"], lease_expires_at=_time(r["lease_expires_at"]),
        mailbox_seq=r["mailbox_seq"], parent_run_id=r["parent_run_id"], parent_step_id=r["parent_step_id"],
        priority=r["priority"], concurrency_key=r["concurrency_key"], slot_held=r["slot_held"], parked=r["parked"],
    )  # fmt: skip


def step_from(r: Row) -> StepRecord:
    """A ``steps`` row as a StepRecord."""
    return StepRecord(
        step_id=r["step_id"], kind=r["kind"], status=r["status"], output=r["output"], error=_error(r["error"]),
        timed_out=r["timed_out"], attempts=r["attempts"], started_at=_time(r["started_at"]),
        completed_at=_time(r["completed_at"]), wake_at=_time(r["wake_at"]), timeout_at=_time(r["timeout_at"]),
        event=r["event"], run_attempt=r["run_attempt"], seq=r["seq"],
    )  # fmt: skip


def event_from(r: Row) -> Event:
    """An ``events`` row as a mailbox Event."""
    created = _time(r["created_at"])
    assert created is not None
    return Event(r["id"], r["name"], r["data"], created)


def _step_json(rec: StepRecord) -> dict[str, Any]:
    return {
        "step_id": rec.step_id, "kind": rec.kind, "status": rec.status, "output": rec.output,
        "error": error_json(rec.error), "timed_out": rec.timed_out, "attempts": rec.attempts,
        "started_at": _iso(rec.started_at), "completed_at": _iso(rec.completed_at),
        "wake_at": _iso(rec.wake_at), "timeout_at": _iso(rec.timeout_at), "event": rec.event,
        "run_attempt": rec.run_attempt, "seq": rec.seq,
    }  # fmt: skip


def steps_json(records: Iterable[StepRecord]) -> Json:
    """Step records as one JSON array for ``upsert_steps``; a repeated step id keeps its first position
    and its last value (as a dict update would)."""
    latest: dict[str, StepRecord] = {}
    for rec in records:
        latest[rec.step_id] = rec
    return Json([_step_json(rec) for rec in latest.values()], dumps=_dumps_json)


def _dumps_json(value: Any) -> str:
    """``serde.dumps`` for values made of JSON types already (step records, whose outputs went
    through ``serde.to_json`` when they were produced): ``json.dumps`` without walking the value
    again in Python. Anything it would not write exactly as ``serde.dumps`` does (non-JSON
    types, NaN, NUL characters, lone surrogates) goes through ``serde.dumps``, errors included."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return serde.dumps(value)
    if "\\u0000" in text or not (text.isascii() or _is_utf8(text)):
        return serde.dumps(value)
    return text


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
