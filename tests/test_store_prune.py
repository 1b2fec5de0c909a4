"""Retention's store contract (SPEC §15): ``prune_runs`` and ``count_prunable`` on every store.

The ``store`` fixture of ``test_store_contract.py``: the in-memory store, Postgres, and the asyncio
Postgres store through a blocking bridge — the same calls, the same answers. Times are passed in:
``T0`` is the contract suite's fixed clock.
"""

from __future__ import annotations

from typing import Any

import pendulum
import psycopg
import pytest

from pgflow.errors import RunNotFoundError
from pgflow.memory import MemoryStore
from pgflow.postgres.ops import retention_lock_key
from pgflow.records import TERMINAL, RunError, RunStatus, Waiting
from pgflow.store import (
    Batch,
    Claimed,
    CompleteRun,
    FailRun,
    KeepRunning,
    PruneQuery,
    StartChild,
    Store,
    SuspendRun,
)
from test_store_contract import LEASE, T0, WF, claim_one, new, rec, sec, start_child, store

__all__ = ["store"]  # the fixture, imported

ALL = tuple(s.value for s in TERMINAL)


def hours(n: float) -> pendulum.DateTime:
    return T0 + pendulum.duration(hours=n)


def query(cutoff: Any, statuses: tuple[str, ...] = ALL, **kw: Any) -> PruneQuery:
    return PruneQuery(cutoff, statuses, **kw)


def end(store: Store, run_id: str, at: Any, how: str = "completed", *, wf: str = WF, **kw: Any) -> None:
    """Start ``run_id`` (the only claimable run of ``wf``), record two steps and an event, and end it
    at ``at``: completed, failed or cancelled."""
    store.start_run(new(run_id, wf=wf, **kw))
    store.deliver_event(run_id, None, "note", {"n": 1}, T0)
    if how == "cancelled":
        store.change(run_id, None, "cancel", None, at)
        return
    c = claim_one(store, at, wf=wf)
    assert c.run.id == run_id
    assert store.commit(c.lease, at, LEASE, Batch((rec("a"), rec("b")))).ok
    outcome = CompleteRun({"ok": 1}) if how == "completed" else FailRun(RunError("ValueError", "no"))
    assert store.commit(c.lease, at, LEASE, Batch(outcome=outcome)).ok


def drain(store: Store, q: PruneQuery, limit: int = 1000) -> list[int | None]:
    """Batches until one deletes nothing (what ``prune`` does): each batch's count."""
    counts: list[int | None] = []
    while True:
        counts.append(store.prune_runs(q, limit, False))
        if not counts[-1]:
            return counts


def gone(store: Store, run_id: str) -> bool:
    try:
        store.get(run_id, None)
    except RunNotFoundError:
        return True
    return False


def complete_child(store: Store, child: str, at: Any) -> None:
    c = claim_one(store, at)
    assert c.run.id == child
    assert store.commit(c.lease, at, LEASE, Batch(outcome=CompleteRun({"v": 1}))).ok


# -- what goes ---------------------------------------------------------------------------------------------


def test_prune_deletes_terminal_runs_that_ended_before_the_cutoff(store: Store) -> None:
    """Completed, failed and cancelled runs that ended before the cutoff go, with their steps and
    events; one that ended at or after it stays; the count is returned."""
    end(store, "done", hours(1))
    end(store, "failed", hours(2), "failed")
    end(store, "cancelled", hours(3), "cancelled")
    end(store, "at-cutoff", hours(5))
    end(store, "recent", hours(9))
    assert store.count_prunable(query(hours(5))) == 3
    assert store.prune_runs(query(hours(5)), 1000, False) == 3
    assert [gone(store, r) for r in ("done", "failed", "cancelled", "at-cutoff", "recent")] == [
        True, True, True, False, False,
    ]  # fmt: skip
    assert store.timelines(["done"]) == {"done": []}
    with pytest.raises(RunNotFoundError):
        store.run_mailbox("done", None)
    assert store.prune_runs(query(hours(5)), 1000, False) == 0
    assert len(store.get("recent", None)[1]) == 2


def test_prune_works_in_batches_oldest_end_first(store: Store) -> None:
    """A batch deletes at most ``limit`` runs, those that ended first; the next batch goes on."""
    for i in range(7):
        end(store, f"r{i}", hours(7 - i))  # r6 ended first
    q = query(hours(10))
    assert store.prune_runs(q, 3, False) == 3
    assert [r for r in (f"r{i}" for i in range(7)) if not gone(store, r)] == ["r0", "r1", "r2", "r3"]
    assert drain(store, q, 3) == [3, 1, 0]


def test_prune_never_deletes_a_live_run(store: Store) -> None:
    """Pending, running, paused and held runs stay, however old; so does their history."""
    store.start_run(new("pending", wf="a"))
    store.start_run(new("running", wf="b"))
    claim_one(store, T0, wf="b")
    store.start_run(new("waiting", wf="c"))
    c = claim_one(store, T0, wf="c")
    wait = SuspendRun(Waiting("w", "wait_for", "go"), None, c.run.mailbox_seq)
    assert store.commit(
        c.lease, T0, LEASE, Batch((rec("w", "waiting", "wait_for", event="go"),), outcome=wait)
    ).ok
    store.start_run(new("held", wf="d"))
    store.change("held", None, "pause", None, T0)
    q = query(hours(10_000))
    assert store.count_prunable(q) == 0
    assert drain(store, q) == [0]
    assert {store.get(r, None)[0].status for r in ("pending", "running", "waiting", "held")} == {
        RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED,
    }  # fmt: skip


def test_prune_leaves_flow_control_alone(store: Store) -> None:
    """A run holding a place under its workflow's concurrency limit, or parked by it, is not terminal
    and stays; a run that ended gave its place back (a cancelled parked run left the queue), so it goes
    without the limits noticing: places and the parked queue work on after the prune."""
    store.register_workflow("limited", [], T0, {"retries": 0, "concurrency": 1, "key_concurrency": None})

    def claim(at: Any) -> list[Claimed]:
        return store.claim("w1", ["limited"], at, LEASE, 10, ["limited"])

    def state(run_id: str) -> tuple[str, bool, str | None]:
        row = store.get(run_id, None)[0]
        return row.status.value, row.slot_held, row.parked

    for i, run_id in enumerate(("first", "second", "third", "dropped")):
        store.start_run(new(run_id, wf="limited", now=sec(i / 10)))
    at = hours(1)
    (first,) = claim(at)
    assert state("dropped") == ("pending", False, "workflow")
    store.change("dropped", None, "cancel", None, at.add(seconds=1))  # parked, then cancelled
    assert store.commit(first.lease, at.add(seconds=2), LEASE, Batch((rec("s"),), outcome=CompleteRun(1))).ok
    (second,) = claim(at.add(seconds=2))  # woken by the place "first" gave back
    assert [state(r) for r in ("first", "dropped", "second", "third")] == [
        ("completed", False, None), ("cancelled", False, None), ("running", True, None),
        ("pending", False, "workflow"),
    ]  # fmt: skip
    q = query(hours(10_000))
    assert store.count_prunable(q) == 2
    assert drain(store, q) == [2, 0]
    assert gone(store, "first") and gone(store, "dropped")
    assert [state(r) for r in ("second", "third")] == [
        ("running", True, None),
        ("pending", False, "workflow"),
    ]
    assert store.commit(second.lease, at.add(seconds=3), LEASE, Batch(outcome=CompleteRun(2))).ok
    assert [c.run.id for c in claim(at.add(seconds=3))] == ["third"]  # the parked run still wakes
    assert drain(store, q) == [1, 0] and gone(store, "second")


def test_prune_filters_by_status_workflow_and_resource(store: Store) -> None:
    """Only runs of the statuses asked for, of the workflow and the resource when given."""
    end(store, "c-a-u1", hours(1), wf="a", resource="u1")
    end(store, "f-a-u2", hours(1), "failed", wf="a", resource="u2")
    end(store, "c-b-u1", hours(1), wf="b", resource="u1")
    end(store, "x-b-none", hours(1), "cancelled", wf="b")
    assert store.prune_runs(query(hours(2), ("failed",)), 1000, False) == 1 and gone(store, "f-a-u2")
    assert store.count_prunable(query(hours(2), workflow_id="b", resource_id="u1")) == 1
    assert store.prune_runs(query(hours(2), workflow_id="b", resource_id="u1"), 1000, False) == 1
    assert gone(store, "c-b-u1") and not gone(store, "c-a-u1")
    assert store.prune_runs(query(hours(2), ("completed", "failed"), workflow_id="b"), 1000, False) == 0
    assert store.prune_runs(query(hours(2), resource_id="u1"), 1000, False) == 1 and gone(store, "c-a-u1")
    assert store.prune_runs(query(hours(2)), 1000, False) == 1 and gone(store, "x-b-none")


def test_pruning_frees_the_idempotency_key(store: Store) -> None:
    """A pruned run's idempotency key starts a new run afterwards."""
    end(store, "first", hours(1), key="order-1")
    assert store.prune_runs(query(hours(2)), 1000, False) == 1
    row, created = store.start_run(new("second", key="order-1", now=hours(3)))
    assert created and row.id == "second"


# -- families ------------------------------------------------------------------------------------------------


def test_a_child_of_a_live_parent_stays(store: Store) -> None:
    """A child that ended stays while its parent is live; once the parent ended, the child goes in one
    batch and the parent in the next (a parent goes after its children)."""
    store.start_run(new("p"))
    start_child(store, "p", "k")
    complete_child(store, "k", hours(1))  # the parent is pending again: live
    q = query(hours(100))
    assert store.count_prunable(q) == 0 and drain(store, q) == [0] and not gone(store, "k")
    c = claim_one(store, hours(2))
    assert c.run.id == "p"
    assert store.commit(c.lease, hours(2), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert store.count_prunable(q) == 2
    assert store.prune_runs(q, 1000, False) == 1 and gone(store, "k") and not gone(store, "p")
    assert store.child_runs("p", None) == []
    assert drain(store, q) == [1, 0] and gone(store, "p")


def test_a_parent_stays_while_a_child_is_live_or_not_pruned(store: Store) -> None:
    """A terminal parent with a live child stays (and the child is never pruned while live); a parent
    whose ended child a filter keeps stays too, so no child is left pointing at a deleted parent."""
    store.start_run(new("p", wf="parent"))
    c = claim_one(store, hours(1), wf="parent")
    child = StartChild(new("k", parent_run_id="p", parent_step_id="c"))
    failed = Batch((rec("c", "waiting", "child", output={"child_run_id": "k"}),),
                   outcome=FailRun(RunError("ValueError", "no")), children=(child,))  # fmt: skip
    assert store.commit(c.lease, hours(1), LEASE, failed).ok  # the parent failed, its child lives on
    q = query(hours(100))
    assert store.count_prunable(q) == 0 and drain(store, q) == [0]
    complete_child(store, "k", hours(2))
    only_parents = query(hours(100), workflow_id="parent")
    assert store.count_prunable(only_parents) == 0 and drain(store, only_parents) == [0]
    assert [r.id for r in store.child_runs("p", None)] == ["k"]
    assert store.count_prunable(q) == 2 and drain(store, q) == [1, 1, 0]
    assert gone(store, "p") and gone(store, "k")


def test_a_grandchild_goes_first_and_an_orphan_goes(store: Store) -> None:
    """Three generations go bottom-up in three batches; a child whose parent no longer exists goes."""
    store.start_run(new("p"))
    start_child(store, "p", "k")
    start_child(store, "k", "g", sec(1))
    store.change("p", None, "cancel", None, hours(1))  # cancels the whole family at once
    store.start_run(new("orphan", wf="o", parent_run_id="ghost", parent_step_id="c"))
    store.change("orphan", None, "cancel", None, hours(1))
    q = query(hours(2))
    assert store.count_prunable(q) == 4
    assert store.prune_runs(q, 1000, False) == 2 and gone(store, "g") and gone(store, "orphan")
    assert drain(store, q) == [1, 1, 0] and gone(store, "p")


def test_count_prunable_is_what_prune_deletes(store: Store) -> None:
    """``count_prunable`` (the dry run) counts exactly what batch after batch deletes, whatever the
    filters: families kept whole by a filter, live parents, runs too recent."""
    store.start_run(new("p1", wf="parent"))  # p1 (ended) -> k1 (ended, wf "kid") -> g1 (ended after cutoff)
    c = claim_one(store, hours(1), wf="parent")
    kid = StartChild(new("k1", wf="kid", parent_run_id="p1", parent_step_id="c"))
    batch = Batch((rec("c", "waiting", "child", output={"child_run_id": "k1"}),),
                  outcome=FailRun(RunError("E", "x")), children=(kid,))  # fmt: skip
    assert store.commit(c.lease, hours(1), LEASE, batch).ok
    k = claim_one(store, hours(1), wf="kid")
    grandkid = StartChild(new("g1", wf="kid", parent_run_id="k1", parent_step_id="c"))
    batch = Batch((rec("c", "waiting", "child", output={"child_run_id": "g1"}),),
                  outcome=FailRun(RunError("E", "x")), children=(grandkid,))  # fmt: skip
    assert store.commit(k.lease, hours(1), LEASE, batch).ok
    g = claim_one(store, hours(50), wf="kid")
    assert store.commit(g.lease, hours(50), LEASE, Batch(outcome=CompleteRun(None))).ok
    for i in range(3):
        end(store, f"solo{i}", hours(i), wf="parent")
    queries = [
        query(hours(10)), query(hours(100)), query(hours(100), workflow_id="parent"),
        query(hours(100), ("failed",)), query(hours(100), workflow_id="kid"),
    ]  # fmt: skip
    expected = [3, 6, 3, 0, 2]  # g1 too recent -> k1, p1 kept; filters keep what they exclude
    assert [store.count_prunable(q) for q in queries] == expected
    for q in queries[::-1]:  # the narrowest first: each drains exactly what it counted just before
        before = store.count_prunable(q)
        assert sum(c or 0 for c in drain(store, q)) == before
        assert store.count_prunable(q) == 0
    assert [r for r in ("p1", "k1", "g1") if not gone(store, r)] == []


# -- one pruning engine at a time ---------------------------------------------------------------------------


def test_an_exclusive_batch_waits_for_no_one(store: Store, request: pytest.FixtureRequest) -> None:
    """``exclusive``: while another session holds the schema's retention lock, a batch deletes
    nothing and answers None (that engine skips its pass); a plain batch goes on. The memory store
    has one lock for everything: an exclusive batch always proceeds."""
    end(store, "old", hours(1))
    end(store, "older", hours(0.5))
    q = query(hours(2))
    if isinstance(store, MemoryStore):
        assert store.prune_runs(q, 1, True) == 1
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema: str = store.schema  # type: ignore[attr-defined]
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (retention_lock_key(schema),))
        assert store.prune_runs(q, 1000, True) is None and not gone(store, "old")
        assert store.prune_runs(q, 1, False) == 1 and gone(store, "older")
        other.execute("SELECT pg_advisory_unlock(%s)", (retention_lock_key(schema),))
    assert store.prune_runs(q, 1000, True) == 1 and gone(store, "old")
    assert retention_lock_key(schema) != retention_lock_key(schema + "x")


def test_a_batch_skips_a_run_another_transaction_holds(store: Store, request: pytest.FixtureRequest) -> None:
    """A run locked by a concurrent operation (a retry, a child ending) is skipped, not waited for:
    prune never blocks the engine's writes (Postgres; the memory store has one lock)."""
    if isinstance(store, MemoryStore):
        pytest.skip("one lock for everything")
    end(store, "busy", hours(1), "failed")
    end(store, "free", hours(1))
    dsn = request.getfixturevalue("pg_dsn")
    schema: str = store.schema  # type: ignore[attr-defined]
    with psycopg.connect(dsn) as other:
        other.execute(f'SELECT 1 FROM "{schema}".runs WHERE id = %s FOR UPDATE', ("busy",))
        assert store.prune_runs(query(hours(2)), 1000, False) == 1
        assert gone(store, "free") and not gone(store, "busy")
        other.rollback()
    assert store.prune_runs(query(hours(2)), 1000, False) == 1 and gone(store, "busy")


def test_pruned_rows_leave_no_steps_or_events_behind(store: Store, request: pytest.FixtureRequest) -> None:
    """Postgres: the steps and events tables hold nothing of a pruned run (the cascade), and the
    live run's rows are untouched."""
    if isinstance(store, MemoryStore):
        pytest.skip("no tables")
    end(store, "old", hours(1))
    store.start_run(new("live", wf="other"))
    store.deliver_event("live", None, "go", {}, T0)
    c = claim_one(store, T0, wf="other")
    assert store.commit(c.lease, T0, LEASE, Batch((rec("s"),), outcome=KeepRunning())).ok
    assert store.prune_runs(query(hours(2)), 1000, False) == 1
    schema: str = store.schema  # type: ignore[attr-defined]
    with psycopg.connect(request.getfixturevalue("pg_dsn")) as conn:
        counts = [
            conn.execute(f'SELECT run_id, count(*) FROM "{schema}".{t} GROUP BY run_id').fetchall()
            for t in ("steps", "events")
        ]
    assert counts == [[("live", 1)], [("live", 1)]]
