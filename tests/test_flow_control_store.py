"""Store contract for flow control (SPEC §16): priority, concurrency limits, keys — memory, Postgres and
the asyncio Postgres store alike (the ``store`` fixture of the contract suite).

A run of a limited workflow holds a place from its first claim until it ends; a claim parks the runs
the limits hold back (pending, not due), and a run that ends wakes the next parked ones.
"""

from __future__ import annotations

from typing import Any

import pendulum
import pytest

import test_store_contract as contract
from pgflow.records import RunError, RunStatus, Waiting
from pgflow.store import Batch, Claimed, CompleteRun, FailRun, KeepRunning, RetryRun, Store, SuspendRun
from test_store_contract import LEASE, T0, new, rec, sec

store = contract.store  # the contract suite's fixture: memory, postgres, async-postgres
LIMITED = "limited"
PLAIN = "plain"


def register(store: Store, wf: str = LIMITED, concurrency: int | None = None, key: int | None = None) -> None:
    store.register_workflow(wf, [], T0, {"retries": 0, "concurrency": concurrency, "key_concurrency": key})


def claim(
    store: Store, now: Any = T0, *, limit: int = 10, wfs: tuple[str, ...] = (LIMITED,)
) -> list[Claimed]:
    return store.claim("w1", list(wfs), now, LEASE, limit, [w for w in wfs if w == LIMITED])


def ids(claimed: list[Claimed]) -> list[str]:
    return [c.run.id for c in claimed]


def status(store: Store, run_id: str) -> tuple[str, bool, bool]:
    row = store.get(run_id, None)[0]
    return row.status.value, row.slot_held, row.parked is not None


def test_higher_priority_is_claimed_first_then_the_earliest_due(store: Store) -> None:
    for run_id, priority, at in (("low", -5, 0), ("mid-late", 0, 2), ("mid-early", 0, 1), ("high", 7, 3)):
        store.start_run(new(run_id, wf=PLAIN, now=sec(at), priority=priority))
    assert ids(claim(store, sec(5), wfs=(PLAIN,))) == ["high", "mid-early", "mid-late", "low"]


def test_priority_does_not_jump_ahead_of_an_expired_lease(store: Store) -> None:
    store.start_run(new("crashed", wf=PLAIN))
    claim(store, T0, wfs=(PLAIN,))  # its worker dies: the lease expires at 30
    store.start_run(new("urgent", wf=PLAIN, now=sec(1), priority=1000))
    assert ids(claim(store, sec(40), wfs=(PLAIN,))) == ["crashed", "urgent"]


def test_a_workflow_limit_parks_what_it_holds_back_and_a_freed_place_wakes_the_best(store: Store) -> None:
    register(store, concurrency=2)
    for i in range(5):
        store.start_run(new(f"r{i}", wf=LIMITED, now=sec(i / 10), priority=1 if i == 4 else 0))
    first = claim(store, sec(1))
    assert ids(first) == ["r4", "r0"]  # priority first, then creation
    assert [status(store, r) for r in ("r1", "r2", "r3")] == [("pending", False, True)] * 3
    assert all(store.get(r, None)[0].updated_at == sec(1) for r in ("r1", "r2", "r3"))  # parked then
    assert claim(store, sec(2)) == []  # parked runs are not due: nothing to claim, nothing polled
    done = first[1]
    assert store.commit(done.lease, sec(3), LEASE, Batch((rec("s"),), outcome=CompleteRun(1))).ok
    assert status(store, "r0") == ("completed", False, False)  # its place is given back
    woken = store.get("r1", None)[0]
    assert (woken.parked, woken.due_at, woken.updated_at) == (None, sec(3), sec(3))
    assert ids(claim(store, sec(3))) == ["r1"]  # the best parked run was woken, due at once
    assert [status(store, r) for r in ("r2", "r3")] == [("pending", False, True)] * 2


def test_a_key_limit_holds_back_runs_of_that_key_only(store: Store) -> None:
    register(store, key=1)
    for run_id, key in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("n1", None), ("n2", None)):
        store.start_run(new(run_id, wf=LIMITED, now=sec(0), concurrency_key=key))
    got = claim(store, sec(1))
    assert sorted(ids(got)) == ["a1", "b1", "n1", "n2"]  # runs without a key are not limited by it
    assert status(store, "a2") == ("pending", False, True)
    a1 = next(c for c in got if c.run.id == "a1")
    failure = FailRun(RunError("ValueError", "no"))
    assert store.commit(a1.lease, sec(2), LEASE, Batch(outcome=failure)).ok  # failing frees it too
    assert ids(claim(store, sec(2))) == ["a2"]


def test_both_limits_together(store: Store) -> None:
    register(store, concurrency=2, key=1)
    for run_id, key in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")):
        store.start_run(new(run_id, wf=LIMITED, now=sec(0), concurrency_key=key))
    got = claim(store, sec(1))
    assert ids(got) == ["a1", "b1"]
    assert store.get("a2", None)[0].parked == "key" and store.get("c1", None)[0].parked == "workflow"
    b1 = got[1]
    assert store.commit(b1.lease, sec(2), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert ids(claim(store, sec(2))) == ["c1"]  # b's place: a2 still waits for key a
    a1 = got[0]
    store.change("a1", None, "cancel", None, sec(3))  # a cancel frees its places
    assert not store.commit(a1.lease, sec(3), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert ids(claim(store, sec(3))) == ["a2"]


def test_waiting_and_held_runs_keep_their_place(store: Store) -> None:
    register(store, concurrency=1)
    store.start_run(new("first", wf=LIMITED))
    store.start_run(new("second", wf=LIMITED, now=sec(0.5)))
    (c,) = claim(store, sec(1), limit=1)
    waiting = Waiting("w", "wait_for", "go")
    suspend = SuspendRun(waiting, None, c.run.mailbox_seq)
    assert store.commit(
        c.lease, sec(1), LEASE, Batch((rec("w", "waiting", "wait_for", event="go"),), outcome=suspend)
    ).ok
    assert status(store, "first") == ("paused", True, False)  # waiting for its event, in progress
    assert claim(store, sec(2)) == []
    assert status(store, "second") == ("pending", False, True)
    store.change("first", None, "pause", None, sec(3))
    assert claim(store, sec(4)) == [] and status(store, "first")[1]  # held: still holds its place
    store.deliver_event("first", None, "go", {}, sec(5))
    store.change("first", None, "resume", None, sec(6))
    (again,) = claim(store, sec(7))
    assert again.run.id == "first"  # back from its wait: taken without a new place
    assert store.commit(again.lease, sec(8), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert ids(claim(store, sec(8))) == ["second"]


def test_a_run_held_before_its_first_claim_takes_no_place(store: Store) -> None:
    register(store, concurrency=1)
    store.start_run(new("held", wf=LIMITED))
    store.start_run(new("other", wf=LIMITED, now=sec(0.5)))
    store.change("held", None, "pause", None, sec(0.7))
    got = claim(store, sec(1))
    assert "other" in ids(got)
    assert status(store, "other") == ("running", True, False)


def test_a_retried_run_keeps_its_place_through_the_backoff(store: Store) -> None:
    register(store, concurrency=1)
    store.start_run(new("flaky", wf=LIMITED, retries=1))
    store.start_run(new("next", wf=LIMITED, now=sec(0.5)))
    (c,) = claim(store, sec(1), limit=1)
    retry = RetryRun(RunError("E", "boom"), sec(5))
    assert store.commit(c.lease, sec(1), LEASE, Batch(outcome=retry)).ok
    assert status(store, "flaky") == ("pending", True, False)
    assert claim(store, sec(2)) == []  # "next" parked: flaky still holds the place
    assert ids(claim(store, sec(5))) == ["flaky"]


def test_unlimited_workflows_are_claimed_beside_limited_ones(store: Store) -> None:
    register(store, concurrency=1)
    store.start_run(new("l1", wf=LIMITED))
    store.start_run(new("l2", wf=LIMITED, now=sec(0.1)))
    store.start_run(new("p1", wf=PLAIN, now=sec(0.2), priority=3))
    got = claim(store, sec(1), wfs=(LIMITED, PLAIN))
    assert ids(got) == ["p1", "l1"]
    assert status(store, "p1") == ("running", False, False)  # a plain run holds no place


def test_keep_running_and_heartbeats_keep_the_place(store: Store) -> None:
    register(store, concurrency=1)
    store.start_run(new("r", wf=LIMITED))
    store.start_run(new("s", wf=LIMITED, now=sec(0.1)))
    (c,) = claim(store, sec(1), limit=1)
    assert store.commit(c.lease, sec(2), LEASE, Batch((rec("a"),), outcome=KeepRunning())).ok
    assert store.heartbeat([c.lease], sec(3), LEASE) == set()
    assert status(store, "r") == ("running", True, False)
    assert claim(store, sec(4)) == []


def test_a_limit_registered_later_applies_to_later_claims(store: Store) -> None:
    register(store)  # no limit
    store.start_run(new("x", wf=LIMITED))
    store.start_run(new("y", wf=LIMITED, now=sec(0.1)))
    assert len(claim(store, sec(1))) == 2
    assert [status(store, r)[1] for r in ("x", "y")] == [False, False]
    register(store, concurrency=1)
    store.start_run(new("z", wf=LIMITED, now=sec(2)))
    assert ids(claim(store, sec(3))) == ["z"]  # x and y took no place (claimed before the limit)


@pytest.mark.parametrize("ending", ["complete", "fail", "cancel"])
def test_every_end_wakes_a_parked_run(store: Store, ending: str) -> None:
    register(store, concurrency=1)
    store.start_run(new("a", wf=LIMITED))
    store.start_run(new("b", wf=LIMITED, now=sec(0.1)))
    (c,) = claim(store, sec(1))
    if ending == "complete":
        assert store.commit(c.lease, sec(2), LEASE, Batch(outcome=CompleteRun(None))).ok
    elif ending == "fail":
        assert store.commit(c.lease, sec(2), LEASE, Batch(outcome=FailRun(RunError("E", "x")))).ok
    else:
        store.change("a", None, "cancel", None, sec(2))
    assert store.get("b", None)[0].due_at == sec(2)
    assert ids(claim(store, sec(2))) == ["b"]
    assert store.get("a", None)[0].status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def test_a_parked_run_cancelled_is_never_woken(store: Store) -> None:
    register(store, concurrency=1)
    for run_id in ("a", "b", "c"):
        store.start_run(new(run_id, wf=LIMITED, now=sec(0)))
    (c,) = claim(store, sec(1))
    store.change("b", None, "cancel", None, sec(2))
    assert status(store, "b") == ("cancelled", False, False)
    assert store.commit(c.lease, sec(3), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert ids(claim(store, sec(3))) == ["c"]
    assert store.get("b", None)[0].due_at is None


def test_now_is_only_a_parameter(store: Store) -> None:
    """Parking and waking use the times passed in (no clock of the database)."""
    register(store, concurrency=1)
    store.start_run(new("a", wf=LIMITED))
    store.start_run(new("b", wf=LIMITED))
    later = pendulum.datetime(2031, 1, 1, 0, 0, 10, tz="UTC")
    (c,) = claim(store, pendulum.datetime(2031, 1, 1, tz="UTC"))
    assert store.commit(c.lease, later, LEASE, Batch(outcome=CompleteRun(0))).ok
    assert store.get("b", None)[0].due_at == later


TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_a_limited_claim_tells_when_each_run_became_claimable_and_keeps_its_trace(store: Store) -> None:
    """The limited claim gives what the plain one gives (SPEC §15): Claimed.due — the run's due time,
    for a parked run the time a freed place woke it, or its lease's expiry for a run taken over — and
    the run's stored trace context, beside its priority and key."""
    register(store, concurrency=1)
    store.start_run(new("a", wf=LIMITED, now=sec(1), priority=5, concurrency_key="k", trace_context=TRACE))
    store.start_run(new("b", wf=LIMITED, now=sec(2)))
    (a,) = claim(store, sec(5))
    assert a.run.id == "a" and a.due == sec(1) and a.run.updated_at == sec(5)
    assert (a.run.trace_context, a.run.priority, a.run.concurrency_key) == (TRACE, 5, "k")
    assert status(store, "b") == ("pending", False, True)
    assert store.commit(a.lease, sec(20), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert store.get("a", None)[0].trace_context == TRACE  # kept through the end that freed the place
    (b,) = claim(store, sec(21))
    assert b.run.id == "b" and b.due == sec(20)  # woken at 20, not due since its start at 2
    assert b.run.trace_context is None
    (taken,) = claim(store, sec(60))  # b's worker died: its lease expired at 21 + 30
    assert taken.run.id == "b" and taken.due == sec(21) + LEASE


@pytest.mark.postgres
def test_limits_hold_exactly_under_concurrent_claims(pg_dsn: str, pg_schema: str) -> None:
    """Eight threads claim and end runs as fast as they can: no key ever has two runs in progress and
    the workflow never more than three, and every run ends (parked runs are always woken)."""
    import threading

    from psycopg_pool import ConnectionPool

    from pgflow.postgres import PostgresStore

    with ConnectionPool(pg_dsn, min_size=2, max_size=12, open=True, kwargs={"autocommit": True}) as pool:
        pg = PostgresStore(pool, schema=pg_schema)
        pg.migrate()
        register(pg, concurrency=3, key=1)
        for i in range(60):
            pg.start_run(new(f"r{i:02}", wf=LIMITED, now=sec(i / 100), concurrency_key=f"k{i % 5}"))
        violations: list[str] = []
        done: set[str] = set()
        lock = threading.Lock()

        def check() -> None:
            with pool.connection() as conn:
                rows = conn.execute(
                    f'SELECT concurrency_key, count(*) FROM "{pg_schema}".runs WHERE slot_held GROUP BY 1'
                ).fetchall()
            per_key = dict(rows)
            if any(n > 1 for n in per_key.values()) or sum(per_key.values()) > 3:
                violations.append(repr(per_key))

        def worker(n: int) -> None:
            clock = 10.0
            for _ in range(400):
                with lock:
                    if len(done) == 60:
                        return
                claimed = pg.claim(f"w{n}", [LIMITED], sec(clock), LEASE, 2, [LIMITED])
                check()
                for c in claimed:
                    assert pg.commit(c.lease, sec(clock), LEASE, Batch(outcome=CompleteRun(n))).ok
                    with lock:
                        done.add(c.run.id)
                if not claimed:
                    threading.Event().wait(0.002)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert violations == []
        assert len(done) == 60
        pg.close()


@pytest.mark.parametrize(
    ("raised_to", "claimable"), [(4, 3), (None, 3), (2, 0)], ids=["raised", "removed", "key added"]
)
def test_new_limits_wake_every_parked_run(store: Store, raised_to: int | None, claimable: int) -> None:
    """A workflow registered again with other limits (a deploy raised or removed them) makes all its
    parked runs due again, to be admitted or parked under the new limits; the same limits again (every
    worker start) leave them parked."""
    register(store, concurrency=1)
    for i in range(4):
        store.start_run(new(f"r{i}", wf=LIMITED, now=sec(i / 10)))
    assert ids(claim(store, sec(1))) == ["r0"]
    register(store, concurrency=1)  # unchanged: nothing woken
    assert [status(store, f"r{i}") for i in (1, 2, 3)] == [("pending", False, True)] * 3
    if raised_to == 2:  # a key limit added, the workflow's kept: one place still
        register(store, concurrency=1, key=2)
    else:
        register(store, concurrency=raised_to)
    woken = [store.get(f"r{i}", None)[0] for i in (1, 2, 3)]
    assert all(r.parked is None and r.due_at == r.updated_at == T0 for r in woken)  # the registration's time
    got = claim(store, sec(2))
    assert len(got) == claimable
    if claimable == 0:  # still one place: the woken runs were parked again
        assert [status(store, f"r{i}") for i in (1, 2, 3)] == [("pending", False, True)] * 3


def test_new_limits_wake_only_the_parked_runs_of_that_workflow(store: Store) -> None:
    """Another limited workflow's parked runs stay parked when one workflow's limits change."""
    register(store, concurrency=1)
    register(store, "other", concurrency=1)
    for run_id, wf in (("l0", LIMITED), ("l1", LIMITED), ("o0", "other"), ("o1", "other")):
        store.start_run(new(run_id, wf=wf, now=sec(0)))
    assert sorted(ids(store.claim("w1", [LIMITED, "other"], sec(1), LEASE, 10, [LIMITED, "other"]))) == [
        "l0",
        "o0",
    ]
    register(store, concurrency=2)
    assert status(store, "l1") == ("pending", False, False)
    assert status(store, "o1") == ("pending", False, True)


@pytest.mark.postgres
@pytest.mark.parametrize("holder", ["client operation", "client operation, only parked run", "another end"])
def test_an_end_wakes_the_best_parked_run_while_another_transaction_holds_it(
    pg_dsn: str, pg_schema: str, holder: str
) -> None:
    """A run that ends wakes the best parked run even while another transaction holds that run's row:
    a client operation on it (``lock_run``, as ``resume_workflow`` or ``send_event`` do; here one that
    fails and writes nothing), or another end that woke it first (then the next best is woken).
    Regression: ``unpark`` skipped locked rows (SKIP LOCKED), so a client call at the wrong moment made
    the end wake the next run instead (out of order) or, with no other run parked, none: the place
    stayed free and the parked run was never claimed."""
    import threading

    import psycopg
    from psycopg_pool import ConnectionPool

    from pgflow.postgres import PostgresStore

    with ConnectionPool(pg_dsn, min_size=1, max_size=4, open=True, kwargs={"autocommit": True}) as pool:
        pg = PostgresStore(pool, schema=pg_schema)
        pg.migrate()
        register(pg, concurrency=2)
        started = ("a", "b", "c") if holder.endswith("only parked run") else ("a", "b", "c", "d")
        for i, run_id in enumerate(started):
            pg.start_run(new(run_id, wf=LIMITED, now=sec(i / 10)))
        first = claim(pg, sec(1))
        assert ids(first) == ["a", "b"] and status(pg, "c") == ("pending", False, True)
        runs = f'"{pg_schema}".runs'
        with psycopg.connect(pg_dsn) as other:  # a transaction of its own, left open
            if holder.startswith("client operation"):
                other.execute(f"SELECT * FROM {runs} WHERE id = 'c' FOR UPDATE")  # as lock_run does
            else:  # b ended and its unpark woke c, not committed yet (what save and unpark write)
                other.execute(f"UPDATE {runs} SET status = 'completed', slot_held = false WHERE id = 'b'")
                other.execute(f"UPDATE {runs} SET parked = NULL, due_at = %s WHERE id = 'c'", (sec(2),))
            results: list[bool] = []

            def end_a() -> None:
                results.append(pg.commit(first[0].lease, sec(2), LEASE, Batch(outcome=CompleteRun(None))).ok)

            ending = threading.Thread(target=end_a)
            ending.start()
            ending.join(0.5)  # a's end waits for c's row
            if holder.startswith("client operation"):
                other.rollback()  # the operation failed: it wrote nothing
            else:
                other.commit()
        ending.join(30)
        assert results == [True]
        woken = ["c"] if holder.startswith("client operation") else ["c", "d"]  # d: woken by a's end
        assert sorted(ids(claim(pg, sec(3)))) == woken
        pg.close()


def test_a_parked_run_times_out_at_its_deadline_without_taking_a_place(store: Store) -> None:
    """SPEC §5: at ``timeout_at`` a non-terminal run fails, also while a limit holds it back. A parked
    run is due at its timeout (not before: no polling for it); the claim then takes it, without a
    place (the engine fails it at once), past the limit (a's lease, taken at 1, lasts until 31)."""
    register(store, concurrency=1)
    store.start_run(new("a", wf=LIMITED))
    store.start_run(new("b", wf=LIMITED, now=sec(0.1), timeout_at=sec(20)))
    store.start_run(new("c", wf=LIMITED, now=sec(0.2)))
    (first,) = claim(store, sec(1))
    assert first.run.id == "a" and status(store, "b") == ("pending", False, True)
    assert store.get("b", None)[0].due_at == sec(20)
    store.deliver_event("b", None, "go", {}, sec(2))  # a write while parked: still parked
    assert status(store, "b") == ("pending", False, True) and store.get("b", None)[0].due_at == sec(20)
    assert claim(store, sec(19)) == []
    (late,) = claim(store, sec(20))
    assert late.run.id == "b" and status(store, "b") == ("running", False, False)  # no place taken
    timed_out = FailRun(RunError("WorkflowTimeoutError", "exceeded its timeout"))
    assert store.commit(late.lease, sec(20), LEASE, Batch(outcome=timed_out)).ok
    assert status(store, "a") == ("running", True, False) and status(store, "c") == ("pending", False, True)
    assert store.commit(first.lease, sec(21), LEASE, Batch(outcome=CompleteRun(None))).ok
    assert ids(claim(store, sec(21))) == ["c"]
