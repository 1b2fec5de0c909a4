"""Every operation of the Postgres stores, written once as a generator of SQL effects (``sqlgen.py``).

``PostgresStore`` runs them with the blocking executor, ``AsyncPostgresStore`` with the asyncio one:
each of their methods is one line naming the operation, its mode (a single statement, a pipelined
transaction, the transaction of a ``Transaction`` step) and whether it only reads. The hot path —
claiming runs, recording a step, completing a run, starting one — is one statement (one round trip)
each; every status change is a locked operation of ``pgflow.locked`` run as one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import pendulum
from psycopg import sql

from pgflow import limits, locked, serde
from pgflow import transitions as tr
from pgflow.errors import InvalidArgumentError, RunNotFoundError, StorageError
from pgflow.memory import check_idempotent, unknown_cursor
from pgflow.records import TERMINAL, Event, StepRecord
from pgflow.static_steps import StepInfo, WorkflowInfo
from pgflow.store import (
    Batch,
    Claimed,
    CommitResult,
    CompleteRun,
    Lease,
    NewRun,
    PruneQuery,
    RunQuery,
    RunRow,
)

from .rows import event_from, json_value, jsonb, pg_time, run_from, run_params, step_from, steps_json, time_of
from .sqlgen import Rows, RowsTogether, Send, SqlGen
from .uow import Channels, as_sql

__all__ = [
    "claim",
    "commit_complete",
    "commit_keep_running",
    "consumed_events",
    "count_prunable",
    "deliver_event_at_once",
    "get",
    "heartbeat",
    "list_runs",
    "mailbox",
    "next_due",
    "prune_runs",
    "register_workflow",
    "reload",
    "start_run",
    "timelines",
    "workflow_settings",
    "workflow_steps",
]

DateTime = pendulum.DateTime


# -- definitions --------------------------------------------------------------------------------------


def register_workflow(
    workflow_id: str, steps: Sequence[StepInfo], now: DateTime, settings: Mapping[str, Any] | None,
    channels: Channels,
) -> SqlGen[None]:  # fmt: skip
    """In one transaction: lock the workflow's row (serialised with its limited claims), store the
    definition, and when its concurrency limits changed, wake its parked runs (``limits.rewake``)."""
    data = serde.converter.unstructure(list(steps), list[StepInfo])
    given = dict(settings or {})
    old = yield Rows("lock_workflow_limits", {"id": workflow_id})
    yield Send("register_workflow", {
        "id": workflow_id, "steps": jsonb(data), "settings": jsonb(given), "now": now,
        "concurrency": given.get("concurrency"), "key_concurrency": given.get("key_concurrency"),
    })  # fmt: skip
    before = limits.Limits(old[0]["concurrency"], old[0]["key_concurrency"]) if old else None
    if limits.rewake(before, limits.Limits(given.get("concurrency"), given.get("key_concurrency"))):
        yield Send("unpark_all", {"workflow_id": workflow_id, "now": now, "wake_channel": channels.wake})


def workflow_settings(workflow_id: str) -> SqlGen[dict[str, Any] | None]:
    found = yield Rows("workflow_settings", {"id": workflow_id})
    return dict(found[0]["settings"]) if found else None


def workflow_steps(workflow_id: str) -> SqlGen[tuple[StepInfo, ...] | None]:
    found = yield Rows("workflow_steps", {"id": workflow_id})
    return tuple(serde.converter.structure(found[0]["steps"], list[StepInfo])) if found else None


# -- client side ----------------------------------------------------------------------------------------


def start_run(new: NewRun, channels: Channels) -> SqlGen[tuple[RunRow, bool]]:
    """One statement inserts the run and wakes the workers; when its id or idempotency key exists
    already, a second read returns the existing run."""
    row = tr.new_row(new)
    params = {**run_params(row), "wake_channel": channels.wake}
    if (yield Rows("start_run", params)):
        return row, True
    if new.idempotency_key is not None:
        found = yield Rows("run_by_key", {"key": new.idempotency_key})
    else:
        found = yield Rows("get_run", {"id": new.id})
    if not found:
        raise StorageError(f"run {new.id} could not be inserted and no conflicting run was found")
    existing = run_from(found[0])
    check_idempotent(existing, new)
    return existing, False


def get(run_id: str, resource_id: str | None) -> SqlGen[tuple[RunRow, list[StepRecord]]]:
    found = yield Rows("get_run_with_steps", {"id": run_id})
    row = run_from(found[0]) if found else None
    if row is None or (resource_id is not None and row.resource_id != resource_id):
        raise RunNotFoundError(locked.not_found_message(run_id, resource_id))
    return row, [step_from(r) for r in found[0]["step_rows"] or ()]


def timelines(run_ids: Sequence[str]) -> SqlGen[dict[str, list[StepRecord]]]:
    found: dict[str, list[StepRecord]] = {rid: [] for rid in run_ids}
    if run_ids:
        for r in (yield Rows("steps_of_runs", {"run_ids": list(run_ids)})):
            found[r["run_id"]].append(step_from(r))
    return found


_FILTERS = {
    "resource_id": sql.SQL("resource_id = %(resource_id)s"),
    "workflow_id": sql.SQL("workflow_id = %(workflow_id)s"),
    "statuses": sql.SQL("status = ANY(%(statuses)s)"),
}
_OLDER = sql.SQL("(created_at, id) < (%(cursor_at)s, %(cursor_id)s)")
_NEWER = sql.SQL("(created_at, id) > (%(cursor_at)s, %(cursor_id)s)")


def list_runs(query: RunQuery) -> SqlGen[tuple[list[RunRow], bool, bool]]:
    """Keyset pages newest first by (created_at, id): the rule of ``memory.keyset_page``; a cursor
    naming another tenant's run is as unknown as a missing one."""
    params: dict[str, Any] = {
        "resource_id": query.resource_id, "workflow_id": query.workflow_id,
        "statuses": list(query.statuses) if query.statuses is not None else None, "limit": query.limit + 1,
    }  # fmt: skip
    filters = [sql.SQL("TRUE")] + [part for key, part in _FILTERS.items() if params[key] is not None]
    cursor_id = query.starting_after or query.ending_before
    name = "list_runs_desc"
    if cursor_id is not None:
        found = yield Rows("cursor_run", {"id": cursor_id, "resource_id": query.resource_id})
        if not found:
            raise InvalidArgumentError(unknown_cursor(cursor_id))
        params["cursor_at"], params["cursor_id"] = found[0]["created_at"], found[0]["id"]
        filters.append(_OLDER if query.starting_after else _NEWER)
        name = "list_runs_desc" if query.starting_after else "list_runs_asc"
    found_rows = yield Rows(name, params, {"filters": sql.SQL(" AND ").join(filters)})
    rows = [run_from(r) for r in found_rows]
    more = len(rows) > query.limit
    page = rows[: query.limit]
    if name == "list_runs_asc":
        return page[::-1], True, more
    return page, more, cursor_id is not None


def count_runs(workflow_id: str | None, resource_id: str | None) -> SqlGen[dict[str, int]]:
    """Runs per status under the same filters as ``list_runs`` (statuses without runs are absent)."""
    params = {"workflow_id": workflow_id, "resource_id": resource_id}
    filters = [sql.SQL("TRUE")] + [_FILTERS[key] for key, value in params.items() if value is not None]
    found = yield Rows("count_runs", params, {"filters": sql.SQL(" AND ").join(filters)})
    return {r["status"]: r["n"] for r in found}


def deliver_event_at_once(
    run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime, channels: Channels
) -> SqlGen[tuple[RunRow, list[StepRecord]] | None]:
    """``trigger_event`` in one statement (the ``deliver_event`` query): the run as written, with
    its step records; None when the run is missing, of another resource or ended: then
    :func:`deliver_event` raises the error."""
    found = yield Rows("deliver_event", {
        "run_id": run_id, "resource_id": resource_id, "event": event, "data": json_value(data),
        "now": pg_time(now), "runs_channel": channels.runs, "wake_channel": channels.wake,
    })  # fmt: skip
    if not found:
        return None
    return run_from(found[0]), [step_from(r) for r in found[0]["step_rows"] or ()]


def deliver_event(
    run_id: str, resource_id: str | None, event: str, data: Any, now: DateTime, channels: Channels
) -> SqlGen[None]:
    yield from as_sql(locked.deliver_event(run_id, resource_id, event, data, now), channels)


def change(
    run_id: str, resource_id: str | None, action: str, data: Any, now: DateTime, channels: Channels
) -> SqlGen[None]:
    yield from as_sql(locked.change(run_id, resource_id, action, data, now), channels)


def retry_run(
    run_id: str, resource_id: str | None, from_step: str | None, now: DateTime, channels: Channels
) -> SqlGen[RunRow]:
    row: RunRow = yield from as_sql(locked.retry_run(run_id, resource_id, from_step, now), channels)
    return row


# -- worker side ----------------------------------------------------------------------------------------


def claim(
    owner: str, workflow_ids: Sequence[str], now: DateTime, lease: pendulum.Duration, limit: int,
    channels: Channels,
) -> SqlGen[list[Claimed]]:  # fmt: skip
    """One statement: lease the claimable runs and load their step records and mailboxes (see the
    ``claim`` query). A run a client changed while the statement ran (an event delivered, a wait
    fast-forwarded) has its steps and mailbox read again, after the lease committed: the snapshot's
    copy may lack what its ``mailbox_seq`` already counts."""
    params = {
        "workflow_ids": list(workflow_ids), "now": pg_time(now), "owner": owner,
        "lease_expires_at": pg_time(now + lease), "runs_channel": channels.runs,
    }  # fmt: skip
    found = yield Rows("claim", params, {"limit": sql.Literal(int(limit))})  # see the query: a literal
    stale = [r["id"] for r in found if not r["snapshot_current"]]
    if not stale:
        return [_claimed_row(r, time_of(r["claim_due"])) for r in found]
    steps, mail = yield RowsTogether(
        (Rows("steps_of_runs", {"run_ids": stale}), Rows("mailbox_of_runs", {"run_ids": stale}))
    )
    return [
        _claimed(run_from(r), steps, mail, time_of(r["claim_due"]))
        if r["id"] in stale
        else _claimed_row(r, time_of(r["claim_due"]))
        for r in found
    ]


def claim_limited(
    owner: str, workflow_ids: Sequence[str], now: DateTime, lease: pendulum.Duration, limit: int,
    limited: Sequence[str], channels: Channels,
) -> SqlGen[list[Claimed]]:  # fmt: skip
    """A claim that serves workflows with concurrency limits, in one transaction: lock those
    workflows' rows (``lock_limits``), count the places in use, lock the candidates (expired leases,
    then ready runs by priority and due time), let ``limits.admit`` choose, park the runs it held back
    and lease the others (``claim_ids``). Without limits in the database after all: ``claim``. Each
    run's ``Claimed.due`` is read from its locked candidate row, as ``claim`` returns ``claim_due``:
    its lease's expiry, or its due time (for a run a freed place woke, when it was woken)."""
    found = yield Rows("lock_limits", {"workflow_ids": [w for w in workflow_ids if w in set(limited)]})
    if not found:
        return (yield from claim(owner, workflow_ids, now, lease, limit, channels))
    bounds = {r["id"]: limits.Limits(r["concurrency"], r["key_concurrency"]) for r in found}
    used_rows, expired, ready = yield RowsTogether((
        Rows("slots_in_use", {"workflow_ids": list(bounds)}),
        Rows("expired_candidates", {"workflow_ids": list(workflow_ids), "now": pg_time(now), "limit": limit}),
        Rows("ready_candidates", {
            "workflow_ids": list(workflow_ids), "now": pg_time(now), "limit": limit + limits.EXTRA_CANDIDATES,
        }),
    ))  # fmt: skip
    used = {(r["workflow_id"], r["concurrency_key"]): r["n"] for r in used_rows}
    candidates = [run_from(r) for r in [*expired, *ready]]
    chosen, parked = limits.admit(candidates, used, bounds, limit, now)
    if parked:
        yield Send("park_runs", {"ids": list(parked), "whys": list(parked.values()), "now": pg_time(now)})
    if not chosen:
        return []
    found_rows = yield Rows("claim_ids", {
        "ids": [r.id for r in chosen], "owner": owner, "now": pg_time(now),
        "lease_expires_at": pg_time(now + lease),
        "placed": [r.id for r in chosen if limits.takes_place(r, bounds, now)],
    })  # fmt: skip
    by_id = {r["id"]: r for r in found_rows}
    started = [r.id for r in chosen if r.status.value == "pending" and not r.held]
    if started:  # pending -> running, announced as the claim statement does
        yield Send("notify", {"channels": [channels.runs] * len(started), "payloads": started})
    return [_claimed_row(by_id[r.id], _due_time(r)) for r in chosen if r.id in by_id]


def reload(lease: Lease) -> SqlGen[Claimed | None]:
    found, step_rows, mail_rows = yield RowsTogether((
        Rows("get_run", {"id": lease.run_id}), Rows("run_steps", {"run_id": lease.run_id}),
        Rows("mailbox_of_runs", {"run_ids": [lease.run_id]}),
    ))  # fmt: skip
    row = run_from(found[0]) if found else None
    if row is None or row.lease_token != lease.token or row.status in TERMINAL:
        return None
    return _claimed(row, step_rows, mail_rows)


def commit_keep_running(
    lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch
) -> SqlGen[CommitResult]:
    """The hot path, one statement: fenced lease renewal + step upserts (+ the events taken)."""
    at = pg_time(now)
    params: dict[str, Any] = {
        "run_id": lease.run_id, "token": lease.token, "owner": lease.owner, "now": at,
        "lease_expires_at": at + lease_duration, "renew_floor": at + tr.renew_margin(lease_duration),
        "current_step_id": batch.current_step_id, "finished_step_id": batch.finished_step_id,
        "steps": steps_json(batch.steps), **_consumed_params(batch),
    }  # fmt: skip
    found = yield Rows("commit_keep_running", params)
    return CommitResult(ok=True, held=bool(found[0]["held"])) if found else CommitResult(ok=False)


def commit_complete(
    lease: Lease, now: DateTime, batch: Batch, channels: Channels
) -> SqlGen[CommitResult | None]:
    """One statement: the last step records and the completion of a run without a parent (see the
    ``commit_complete`` query); None when it did not apply (lease lost, or a child run)."""
    assert isinstance(batch.outcome, CompleteRun)
    found = yield Rows("commit_complete", {
        "run_id": lease.run_id, "token": lease.token, "owner": lease.owner, "now": pg_time(now),
        "current_step_id": batch.current_step_id, "steps": steps_json(batch.steps),
        "output": json_value(batch.outcome.output), **_consumed_params(batch), "channel": channels.runs,
    })  # fmt: skip
    return CommitResult(ok=True) if found else None


def _consumed_params(batch: Batch) -> dict[str, list[Any] | None]:
    """The events a hot commit marks consumed, as two arrays; NULL for none (most steps): psycopg
    looks through an empty list for its element type on every call."""
    if not batch.consumed:
        return {"event_ids": None, "event_steps": None}
    return {"event_ids": [i for i, _ in batch.consumed], "event_steps": [s for _, s in batch.consumed]}


def commit_locked(
    lease: Lease, now: DateTime, lease_duration: pendulum.Duration, batch: Batch,
    transaction: tuple[Any, StepRecord] | None, channels: Channels,
) -> SqlGen[CommitResult]:  # fmt: skip
    result: CommitResult = yield from as_sql(
        locked.commit(lease, now, lease_duration, batch, transaction), channels
    )
    return result


def heartbeat(leases: Sequence[Lease], now: DateTime, lease_duration: pendulum.Duration) -> SqlGen[set[str]]:
    lost = yield Rows("heartbeat", {
        "ids": [x.run_id for x in leases], "owners": [x.owner for x in leases],
        "tokens": [x.token for x in leases], "now": pg_time(now),
        "lease_expires_at": pg_time(now + lease_duration),
    })  # fmt: skip
    return {r["id"] for r in lost}


def next_due(workflow_ids: Sequence[str]) -> SqlGen[DateTime | None]:
    found = yield Rows("next_due", {"workflow_ids": list(workflow_ids)})
    due = found[0]["due"] if found else None
    return None if due is None else pendulum.instance(due).in_timezone("UTC")


def notify_runs(channels: Channels, payload: str) -> SqlGen[None]:
    """A notification on the runs channel (the LISTEN probe)."""
    yield Send("notify", {"channels": [channels.runs], "payloads": [payload]})


# -- inspection ------------------------------------------------------------------------------------------


def mailbox(run_id: str) -> SqlGen[list[Event]]:
    return [event_from(r) for r in (yield Rows("mailbox_of_runs", {"run_ids": [run_id]}))]


def consumed_events(run_id: str) -> SqlGen[dict[int, str]]:
    return {r["id"]: r["consumed_by_step"] for r in (yield Rows("consumed_events", {"run_id": run_id}))}


# -- rows to values ----------------------------------------------------------------------------------------


def _due_time(row: RunRow) -> DateTime | None:
    """When a claim candidate (read before its lease) became claimable: its lease's expiry (a
    crashed worker's run) or its due time — ``claim_due`` in the ``claim`` query."""
    return row.lease_expires_at if row.lease_owner is not None else row.due_at


def _claimed_row(r: dict[str, Any], due: DateTime | None) -> Claimed:
    """A row of the ``claim`` (or ``claim_ids``) query: the leased run, with its steps and mailbox as
    json arrays; ``due``: when it became claimable (``Claimed.due``)."""
    row = run_from(r)
    records = {s["step_id"]: step_from(s) for s in r["step_rows"] or ()}
    mail = [event_from(e) for e in r["mailbox_rows"] or ()]
    lease = Lease(row.id, row.lease_owner or "", row.lease_token)
    return Claimed(row, records, mail, lease, due)


def _claimed(
    row: RunRow, steps: list[dict[str, Any]], mail: list[dict[str, Any]], due: DateTime | None = None
) -> Claimed:
    records = {r["step_id"]: step_from(r) for r in steps if r["run_id"] == row.id}
    events = [event_from(r) for r in mail if r["run_id"] == row.id]
    return Claimed(row, records, events, Lease(row.id, row.lease_owner or "", row.lease_token), due)


# -- dashboard reads ---------------------------------------------------------------------------------------


def list_workflows() -> SqlGen[list[WorkflowInfo]]:
    found = yield Rows("list_workflows")
    return [
        WorkflowInfo(r["id"], tuple(serde.converter.structure(r["steps"], list[StepInfo])),
                     pendulum.instance(r["registered_at"]).in_timezone("UTC"))
        for r in found
    ]  # fmt: skip


def _scoped(run_id: str, resource_id: str | None, read: Rows) -> SqlGen[list[dict[str, Any]]]:
    """The rows of ``read`` about a run, read with the run's scope in one round trip;
    ``RunNotFoundError`` as ``get`` when the run is missing or of another resource."""
    scope, rows = yield RowsTogether((Rows("run_scope", {"id": run_id}), read))
    if not scope or (resource_id is not None and scope[0]["resource_id"] != resource_id):
        raise RunNotFoundError(locked.not_found_message(run_id, resource_id))
    found: list[dict[str, Any]] = rows
    return found


def run_mailbox(run_id: str, resource_id: str | None) -> SqlGen[list[Event]]:
    mail = yield from _scoped(run_id, resource_id, Rows("mailbox_of_runs", {"run_ids": [run_id]}))
    return [event_from(r) for r in mail]


def child_runs(run_id: str, resource_id: str | None) -> SqlGen[list[RunRow]]:
    found = yield from _scoped(run_id, resource_id, Rows("child_runs", {"id": run_id}))
    children = [run_from(r) for r in found]
    return [c for c in children if resource_id is None or c.resource_id == resource_id]


# -- retention (SPEC §15) ------------------------------------------------------------------------------------


def retention_lock_key(schema: str) -> int:
    """The signed 64-bit advisory lock key of pruning ``schema`` (one pruning engine at a time)."""
    digest = hashlib.sha256(f"pgflow.retention:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _prune_params(query: PruneQuery) -> dict[str, Any]:
    return {
        "statuses": list(query.statuses), "cutoff": pg_time(query.cutoff),
        "workflow_id": query.workflow_id, "resource_id": query.resource_id,
    }  # fmt: skip


def prune_runs(query: PruneQuery, limit: int, exclusive: bool, schema: str) -> SqlGen[int | None]:
    """One batch, one statement (see the ``prune_runs`` query); None when ``exclusive`` and another
    store holds the schema's retention lock."""
    lock_key = retention_lock_key(schema) if exclusive else None
    found = yield Rows("prune_runs", {**_prune_params(query), "limit": limit, "lock_key": lock_key})
    return int(found[0]["deleted"]) if found[0]["open"] else None


def count_prunable(query: PruneQuery) -> SqlGen[int]:
    found = yield Rows("count_prunable", _prune_params(query))
    return int(found[0]["n"])
