"""The unit-of-work effects of ``pgflow.locked`` as SQL: one locked operation → one transaction.

:func:`as_sql` turns a locked operation (a generator of unit-of-work effects) into a generator of SQL
effects that either executor of ``sqlgen.py`` runs inside one transaction. Notifications are collected
and sent just before COMMIT, so listeners see them exactly when the change is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import attrs
import pendulum

from pgflow import locked, serde, step_records
from pgflow.records import StepRecord

from .rows import json_value, run_from, run_params, step_from, steps_json
from .sqlgen import Rows, Send, SqlGen, WithConnection

__all__ = ["Channels", "as_sql"]

DateTime = pendulum.DateTime


@attrs.frozen
class Channels:
    """The notification channels of one schema."""

    wake: str
    runs: str


def as_sql(
    op: Generator[Any, Any, Any], channels: Channels, perform: Callable[[Any], SqlGen[Any]] | None = None
) -> SqlGen[Any]:
    """Run a locked operation as SQL effects; its return value is the operation's. ``perform`` turns
    its effects other than ``Notify`` into SQL (default: those of ``pgflow.locked``)."""
    perform = perform or _perform
    notes: dict[tuple[str, str], None] = {}
    answer: Any = None
    while True:
        try:
            effect = op.send(answer)
        except StopIteration as stop:
            if notes:
                yield Send("notify", {"channels": [c for c, _ in notes], "payloads": [p for _, p in notes]})
            return stop.value
        if isinstance(effect, locked.Notify):
            notes[(channels.wake if effect.channel == "wake" else channels.runs, effect.payload)] = None
            answer = None
        else:
            answer = yield from perform(effect)


def _perform(effect: locked.UowEffect) -> SqlGen[Any]:
    if isinstance(effect, locked.LockRun):
        found = yield Rows("lock_run", {"id": effect.run_id})
        return run_from(found[0]) if found else None
    if isinstance(effect, locked.ReadStep):
        found = yield Rows("run_step", {"run_id": effect.run_id, "step_id": effect.step_id})
        return step_from(found[0]) if found else None
    if isinstance(effect, locked.RunSteps):
        return [step_from(r) for r in (yield Rows("run_steps", {"run_id": effect.run_id}))]
    if isinstance(effect, locked.UnconsumedNames):
        found = yield Rows("unconsumed_names", {"run_id": effect.run_id})
        return {r["name"] for r in found}
    if isinstance(effect, locked.LockLiveChildren):
        found = yield Rows("lock_children", {"id": effect.run_id})
        return [run_from(r) for r in found]
    if isinstance(effect, locked.WriteRun):
        yield Send("update_run", run_params(effect.row))
        return None
    if isinstance(effect, locked.WriteSteps):
        yield Send("upsert_steps", {"run_id": effect.run_id, "steps": steps_json(effect.steps)})
        return None
    if isinstance(effect, locked.InsertRun):
        return bool((yield Rows("insert_run", run_params(effect.row))))
    if isinstance(effect, locked.InsertEvent):
        params = {
            "run_id": effect.run_id,
            "name": effect.name,
            "data": json_value(effect.data),
            "now": effect.now,
        }
        yield Send("insert_event", params)
        return None
    if isinstance(effect, locked.ConsumeEvents):
        ids, step_ids = [i for i, _ in effect.consumed], [s for _, s in effect.consumed]
        yield Send(
            "consume_events", {"run_id": effect.run_id, "ids": ids, "step_ids": step_ids, "now": effect.now}
        )
        return None
    if isinstance(effect, locked.DiscardSteps):
        released = yield Rows("release_events", {"run_id": effect.run_id, "step_ids": list(effect.step_ids)})
        yield Send("delete_steps", {"run_id": effect.run_id, "step_ids": list(effect.step_ids)})
        return {r["name"] for r in released}
    if isinstance(effect, locked.FreePlace):
        yield Rows("share_limits", {"workflow_id": effect.workflow_id})  # a statement of its own: see unpark
        yield Send(
            "unpark", {"workflow_id": effect.workflow_id, "key": effect.concurrency_key, "now": effect.now}
        )
        return None
    assert isinstance(effect, locked.RunTransaction), effect
    return (yield from _transaction_step(effect))


def _transaction_step(effect: locked.RunTransaction) -> SqlGen[StepRecord]:
    """A Transaction step's ``fn(conn, *args)`` inside the operation's transaction, and its record."""
    cmd, base = effect.transaction
    result = yield WithConnection(cmd.fn, tuple(cmd.args))
    output = serde.to_json(result, root=f"result of step {base.step_id!r}")
    return step_records.completed(base, output, effect.now)
