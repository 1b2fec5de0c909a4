"""Concurrency limits (SPEC §16), as pure rules both stores apply.

A run of a workflow with ``concurrency`` / ``key_concurrency`` limits is *in progress* — it holds a
place (``RunRow.slot_held``) — from its first claim until it ends. A claim admits candidates in claim
order while places are free (:func:`admit`); a candidate the limits hold back is *parked*: it stays
``pending`` but is no longer due, so no worker polls for it, until a run of its workflow that held a
place ends and wakes the next parked ones (:func:`to_wake`). A run parked on its ``key`` waits for its
key to free a place (that also frees a place of the workflow); one parked on its ``workflow``, for any
place of the workflow. A parked run is due again at its workflow timeout (``due_at = timeout_at``,
None without one): the claim then takes it without a place, to be failed (SPEC §5). Claims and wake-ups of a limited workflow are serialised (in PostgreSQL by a
lock on the workflow's row), so the limits hold exactly under any number of workers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import attrs
from pendulum import DateTime

from .store import RunRow

__all__ = [
    "EXTRA_CANDIDATES",
    "Limits",
    "admit",
    "in_use",
    "limited_ids",
    "rewake",
    "settled",
    "takes_place",
    "to_wake",
]

EXTRA_CANDIDATES = 200  # ready runs a limited claim looks at beyond its limit (to park those held back)


@attrs.frozen
class Limits:
    """A workflow's limits: runs in progress at once, overall and per concurrency key (None: no limit)."""

    concurrency: int | None = None
    key_concurrency: int | None = None

    def __bool__(self) -> bool:
        return self.concurrency is not None or self.key_concurrency is not None


def limited_ids(workflows: Mapping[str, object]) -> list[str]:
    """The ids of the definitions that have a limit (a worker claims their runs the limited way)."""
    return [
        wid
        for wid, wf in workflows.items()
        if getattr(wf, "concurrency", None) is not None or getattr(wf, "key_concurrency", None) is not None
    ]


def in_use(rows: Iterable[RunRow]) -> Counter[tuple[str, str | None]]:
    """Places in use per (workflow, key), from the runs that hold one."""
    return Counter((r.workflow_id, r.concurrency_key) for r in rows if r.slot_held)


def _timed_out(row: RunRow, now: DateTime) -> bool:
    return row.timeout_at is not None and row.timeout_at <= now


def takes_place(row: RunRow, limits: Mapping[str, Limits], now: DateTime) -> bool:
    """Whether claiming ``row`` at ``now`` takes a place: a run of a limited workflow that holds none
    yet, unless it is held (given back at once) or past its timeout (failed at once)."""
    return bool(limits.get(row.workflow_id)) and not (row.slot_held or row.held or _timed_out(row, now))


def admit(
    candidates: Sequence[RunRow], used: Mapping[tuple[str, str | None], int], limits: Mapping[str, Limits],
    limit: int, now: DateTime,
) -> tuple[list[RunRow], dict[str, str]]:  # fmt: skip
    """The candidates (in claim order) a claim at ``now`` of at most ``limit`` runs takes, and those to
    park (run id -> ``"key"`` or ``"workflow"``: which limit held it back). A run that takes no place
    (:func:`takes_place`) is taken as it comes."""
    by_key: Counter[tuple[str, str | None]] = Counter(used)
    by_workflow: Counter[str] = Counter()
    for (wid, _), n in used.items():
        by_workflow[wid] += n
    taken: list[RunRow] = []
    parked: dict[str, str] = {}
    for row in candidates:
        if len(taken) >= limit:
            break
        found = limits.get(row.workflow_id)
        if not found or not takes_place(row, limits, now):
            taken.append(row)
            continue
        key = (row.workflow_id, row.concurrency_key)
        limited_key = found.key_concurrency is not None and row.concurrency_key is not None
        if limited_key and by_key[key] >= (found.key_concurrency or 0):
            parked[row.id] = "key"
            continue
        if found.concurrency is not None and by_workflow[row.workflow_id] >= found.concurrency:
            parked[row.id] = "workflow"
            continue
        by_key[key] += 1
        by_workflow[row.workflow_id] += 1
        taken.append(row)
    return taken, parked


def settled(row: RunRow) -> RunRow:
    """A run about to be written, its flow-control state made consistent: a run that ended gives its
    place back, and a run that is held, ended or due again (at another time than its timeout, when a
    parked run is due) is no longer parked."""
    if row.status.value in ("completed", "failed", "cancelled"):
        return attrs.evolve(row, slot_held=False, parked=None) if row.slot_held or row.parked else row
    if row.parked is not None and (row.held or row.due_at != row.timeout_at):
        return attrs.evolve(row, parked=None)
    return row


def _wake_order(row: RunRow) -> tuple[int, object, str]:
    return (-row.priority, row.created_at, row.id)


def to_wake(parked: Iterable[RunRow], workflow_id: str, key: str | None) -> list[RunRow]:
    """A run of ``workflow_id`` (with ``key``) that held a place ended: the parked runs to wake — the
    best parked on that key, and the best parked on the workflow (priority, then creation order).
    (The ``unpark`` query in SQL picks the same.)"""
    mine = [r for r in parked if r.workflow_id == workflow_id and r.parked is not None]
    woken = []
    on_key = [r for r in mine if r.parked == "key" and key is not None and r.concurrency_key == key]
    if on_key:
        woken.append(min(on_key, key=_wake_order))
    on_workflow = [r for r in mine if r.parked == "workflow"]
    if on_workflow:
        woken.append(min(on_workflow, key=_wake_order))
    return woken


def rewake(before: Limits | None, after: Limits) -> bool:
    """A workflow registered again with other limits: its parked runs must all be due again (the next
    limited claim admits or parks each under the new limits). Without it, a raised limit would fill
    only as runs end (each end wakes one or two), and a removed one would leave them parked for good
    (no run of an unlimited workflow holds a place, so none ends to wake them)."""
    return before is not None and before != after
