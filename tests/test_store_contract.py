"""One contract suite for both stores: MemoryStore and PostgresStore must behave identically.

Every test drives the store through its public methods with a fixed, manually advanced clock.
The last section holds Postgres-only behaviour (Transaction steps, LISTEN/NOTIFY, concurrency).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pendulum
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from async_bridge import BlockingBridge
from pgflow import transitions as tr
from pgflow.errors import (
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidStateError,
    RunNotFoundError,
    StorageError,
)
from pgflow.memory import MemoryStore
from pgflow.postgres import PostgresStore
from pgflow.records import RunError, RunStatus, StepRecord, Waiting
from pgflow.static_steps import StepInfo
from pgflow.store import (
    Batch,
    Claimed,
    CompleteRun,
    FailRun,
    KeepRunning,
    Lease,
    NewRun,
    ReleaseRun,
    RetryRun,
    RunQuery,
    StartChild,
    Store,
    SuspendRun,
)

T0 = pendulum.datetime(2024, 1, 1, tz="UTC")
LEASE = pendulum.duration(seconds=30)
WF = "wf"


def sec(n: float) -> pendulum.DateTime:
    return T0 + pendulum.duration(seconds=n)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("async-postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store under test: in-memory, or Postgres in a fresh migrated schema — blocking, or the
    asyncio store driven through a blocking bridge (the same operations, the other executor)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    if request.param == "async-postgres":
        bridge = BlockingBridge(dsn, schema)
        bridge.migrate()
        yield bridge  # type: ignore[misc]
        bridge.shutdown()
        return
    with ConnectionPool(dsn, min_size=1, max_size=4, open=True) as pool:
        pg = PostgresStore(pool, schema=schema)
        pg.migrate()
        yield pg
        pg.close()


def new(
    run_id: str,
    *,
    wf: str = WF,
    resource: str | None = None,
    key: str | None = None,
    now: Any = T0,
    **kw: Any,
) -> NewRun:
    return NewRun(
        run_id, wf, resource, {"n": 1}, kw.pop("retries", 0), 1.0, key, kw.pop("timeout_at", None), now, **kw
    )


def rec(step_id: str, status: str = "completed", kind: str = "run", **kw: Any) -> StepRecord:
    return StepRecord(step_id, kind, status, **{"started_at": T0, "attempts": 1, **kw})


def claim_one(store: Store, now: Any = T0, owner: str = "w1", wf: str = WF) -> Claimed:
    claimed = store.claim(owner, [wf], now, LEASE, 10)
    assert len(claimed) == 1
    return claimed[0]


def suspend_at(store: Store, run_id: str, step: StepRecord, waiting: Waiting, now: Any = T0) -> None:
    c = claim_one(store, now)
    assert c.run.id == run_id
    outcome = SuspendRun(waiting, waiting.wake_at, c.run.mailbox_seq)
    assert store.commit(c.lease, now, LEASE, Batch((step,), outcome=outcome)).ok


def wait_for(store: Store, run_id: str, event: str = "go") -> None:
    step = rec("w", "waiting", "wait_for", event=event)
    suspend_at(store, run_id, step, Waiting("w", "wait_for", event))


# -- start, get, definitions ------------------------------------------------------------------------


def test_start_and_get(store: Store) -> None:
    """A started run is pending, due now, and get returns it with no steps."""
    row, created = store.start_run(new("r1", resource="u1", timeout_at=sec(100)))
    assert created and row.status == RunStatus.PENDING and row.due_at == T0
    got, steps = store.get("r1", None)
    assert got == row and steps == []
    assert got.input == {"n": 1} and got.timeout_at == sec(100) and got.created_at == T0


def test_idempotent_start_returns_existing(store: Store) -> None:
    """A second start with the same key returns the first run, not a new one."""
    first, created1 = store.start_run(new("r1", key="k", resource="u1"))
    again, created2 = store.start_run(new("r2", key="k", resource="u1", now=sec(5)))
    assert created1 and not created2 and again.id == "r1" and again == first
    with pytest.raises(RunNotFoundError):
        store.get("r2", None)


def test_idempotency_conflict_other_workflow_or_resource(store: Store) -> None:
    """Reusing a key for another workflow or another resource raises IdempotencyConflictError."""
    store.start_run(new("r1", key="k", resource="u1"))
    with pytest.raises(IdempotencyConflictError):
        store.start_run(new("r2", key="k", wf="other", resource="u1"))
    with pytest.raises(IdempotencyConflictError):
        store.start_run(new("r3", key="k", resource="u2"))
    with pytest.raises(IdempotencyConflictError):
        store.start_run(new("r4", key="k"))


def test_get_scoped_by_resource(store: Store) -> None:
    """A run of another resource (or none) is reported exactly like a missing run."""
    store.start_run(new("r1", resource="u1"))
    store.start_run(new("r2"))
    assert store.get("r1", "u1")[0].id == "r1"
    assert store.get("r1", None)[0].id == "r1"
    for run_id, resource in [("r1", "u2"), ("r2", "u1"), ("nope", None)]:
        with pytest.raises(RunNotFoundError, match=run_id):
            store.get(run_id, resource)


def test_not_found_names_the_run_and_the_resource_asked_for(store: Store) -> None:
    """RunNotFoundError names the run id and, when the caller gave one, the resource it asked for
    (the same message for a missing run and another tenant's run)."""
    store.start_run(new("r1", resource="u1"))
    for run_id, resource, message in [
        ("nope", None, "run 'nope' not found"),
        ("nope", "u2", "run 'nope' not found for resource 'u2'"),
        ("r1", "u2", "run 'r1' not found for resource 'u2'"),
    ]:
        with pytest.raises(RunNotFoundError) as info:
            store.get(run_id, resource)
        assert str(info.value) == message
        with pytest.raises(RunNotFoundError) as info:
            store.change(run_id, resource, "cancel", None, sec(1))
        assert str(info.value) == message


def test_idempotency_conflict_names_the_key_and_the_workflow(store: Store) -> None:
    """The conflict error names the reused key and the workflow the caller asked for."""
    store.start_run(new("r1", key="order-7"))
    with pytest.raises(IdempotencyConflictError) as info:
        store.start_run(new("r2", key="order-7", wf="billing"))
    assert "'order-7'" in str(info.value) and "'billing'" in str(info.value)


def test_workflow_settings_round_trip(store: Store) -> None:
    """A workflow's run settings read back as registered (a copy); registered without settings → {};
    never registered → None."""
    settings = {"retries": 3, "timeout": 60.0, "retry_backoff": 2.0}
    store.register_workflow("wf", (StepInfo("a", "run"),), T0, settings)
    found = store.workflow_settings("wf")
    assert found == settings
    assert found is not None
    found["retries"] = 99
    assert store.workflow_settings("wf") == settings
    store.register_workflow("bare", (), T0)
    assert store.workflow_settings("bare") == {}
    assert store.workflow_settings("missing") is None


def test_register_workflow_round_trip(store: Store) -> None:
    """Registered step lists read back equal; re-registering replaces; unknown ids give None."""
    steps = (StepInfo("a", "run"), StepInfo("b", "wait_for", conditional=True, loop=True, dynamic=False))
    store.register_workflow("wf", steps, T0)
    assert store.workflow_steps("wf") == steps
    store.register_workflow("wf", steps[:1], sec(1))
    assert store.workflow_steps("wf") == steps[:1]
    assert store.workflow_steps("missing") is None


def test_timelines_of_several_runs(store: Store) -> None:
    """timelines() gives each run's step records in execution order, and [] for runs without any."""
    store.start_run(new("r1"))
    store.start_run(new("r2"))
    lease = store.claim("w1", [WF], T0, LEASE, 1)[0].lease  # one of the two
    steps = (rec("b"), rec("a"))
    assert store.commit(lease, T0, LEASE, Batch(steps, (), KeepRunning())).ok
    found = store.timelines([lease.run_id, "r1" if lease.run_id == "r2" else "r2", "missing"])
    assert [s.step_id for s in found[lease.run_id]] == ["b", "a"]
    assert [found[k] for k in found if k != lease.run_id] == [[], []]


# -- claim, lease, fencing --------------------------------------------------------------------------


def test_claim_takes_a_lease(store: Store) -> None:
    """Claiming makes the run running under a new lease token; a second claim does not take it."""
    store.start_run(new("r1"))
    c = claim_one(store)
    assert c.run.status == RunStatus.RUNNING and c.lease == Lease("r1", "w1", 1)
    assert c.run.lease_expires_at == T0 + LEASE and c.run.due_at is None
    assert c.steps == {} and c.mailbox == []
    assert store.claim("w2", [WF], sec(29), LEASE, 10) == []
    assert store.get("r1", None)[0].status == RunStatus.RUNNING


def test_claim_filters_by_workflow_and_due_time(store: Store) -> None:
    """Only runs of the asked workflows that are due are claimed, earliest due first, up to limit."""
    store.start_run(new("b", now=sec(2)))
    store.start_run(new("a", now=sec(1)))
    store.start_run(new("c", now=sec(3)))
    store.start_run(new("other", wf="wf2"))
    assert store.claim("w", [WF], T0, LEASE, 10) == []
    assert [c.run.id for c in store.claim("w", [WF], sec(2), LEASE, 10)] == ["a", "b"]
    assert [c.run.id for c in store.claim("w", [WF, "wf2"], sec(3), LEASE, 1)] == ["other"]
    assert [c.run.id for c in store.claim("w", [WF], sec(3), LEASE, 5)] == ["c"]


def test_claim_takes_the_earliest_due_not_the_oldest(store: Store) -> None:
    """A run created first but due later (a timer) is claimed after a younger run due before it."""
    store.start_run(new("timer", now=T0))
    suspend_at(
        store, "timer", rec("d", "waiting", "delay", wake_at=sec(20)), Waiting("d", "delay", None, sec(20))
    )
    store.start_run(new("young", now=sec(5)))
    assert [c.run.id for c in store.claim("w", [WF], sec(30), LEASE, 1)] == ["young"]
    assert [c.run.id for c in store.claim("w", [WF], sec(30), LEASE, 1)] == ["timer"]


TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "k=v"}


def test_the_trace_context_is_kept_with_the_run(store: Store) -> None:
    """A run keeps the trace context it was started with — read, claimed, retried — and a child run
    the one its parent's commit gave it; a run started without one has none."""
    store.start_run(new("r1", trace_context=TRACE))
    store.start_run(new("plain", now=sec(1)))
    assert store.get("r1", None)[0].trace_context == TRACE
    assert store.get("plain", None)[0].trace_context is None
    c = store.claim("w1", [WF], sec(2), LEASE, 1)[0]
    assert c.run.id == "r1" and c.run.trace_context == TRACE
    assert store.commit(c.lease, sec(2), LEASE, Batch(outcome=FailRun(RunError("E", "m")))).ok
    assert store.retry_run("r1", None, None, sec(3)).trace_context == TRACE
    child_context = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"}
    c = store.claim("w1", [WF], sec(3), LEASE, 1)[0]
    assert c.run.id == "plain"
    batch = Batch(
        (rec("c", "waiting", "child", output={"child_run_id": "kid"}),),
        outcome=SuspendRun(Waiting("c", "child"), None, c.run.mailbox_seq),
        children=(
            StartChild(new("kid", parent_run_id="plain", parent_step_id="c", trace_context=child_context)),
        ),
    )
    assert store.commit(c.lease, sec(3), LEASE, batch).ok
    assert store.get("kid", None)[0].trace_context == child_context


def test_claim_tells_when_each_run_became_claimable(store: Store) -> None:
    """Claimed.due: the run's due time (its start, its timer), or its lease's expiry for a run taken
    over; the claim delay of pgflow.claim.delay is the claim's time (updated_at) minus it."""
    store.start_run(new("fresh", now=sec(1)))
    (c,) = store.claim("w1", [WF], sec(5), LEASE, 1)
    assert c.run.id == "fresh" and c.due == sec(1) and c.run.updated_at == sec(5)
    (taken,) = store.claim("w2", [WF], sec(40), LEASE, 1)  # the first lease expired at 35 s
    assert taken.run.id == "fresh" and taken.due == sec(5) + LEASE
    store.start_run(new("timer", now=sec(50)))
    suspend_at(
        store, "timer", rec("d", "waiting", "delay", wake_at=sec(60)), Waiting("d", "delay", None, sec(60)),
        now=sec(50),
    )  # fmt: skip
    assert store.commit(taken.lease, sec(41), LEASE, Batch(outcome=CompleteRun(None))).ok
    (woke,) = store.claim("w1", [WF], sec(70), LEASE, 1)
    assert woke.run.id == "timer" and woke.due == sec(60)


def test_expired_lease_is_taken_over_and_old_token_fenced(store: Store) -> None:
    """After expiry another worker claims with token+1; the old holder can no longer commit."""
    store.start_run(new("r1"))
    old = claim_one(store, T0, "w1")
    new_claim = claim_one(store, sec(30), "w2")
    assert new_claim.lease == Lease("r1", "w2", 2)
    refused = store.commit(old.lease, sec(31), LEASE, Batch((rec("s1"),)))
    assert not refused.ok and not refused.mailbox_changed
    assert store.get("r1", None)[1] == []
    assert store.commit(new_claim.lease, sec(31), LEASE, Batch((rec("s1"),))).ok


def test_commit_refused_when_lease_expired(store: Store) -> None:
    """A commit at or after the lease expiry writes nothing, even without a takeover."""
    store.start_run(new("r1"))
    c = claim_one(store)
    assert not store.commit(c.lease, sec(30), LEASE, Batch((rec("s1"),))).ok
    assert not store.commit(c.lease, sec(31), LEASE, Batch((rec("s1"),), outcome=CompleteRun(1))).ok
    assert store.get("r1", None)[1] == []
    assert store.get("r1", None)[0].status == RunStatus.RUNNING


def test_reload(store: Store) -> None:
    """reload returns the current row, steps and mailbox while the token matches, else None."""
    store.start_run(new("r1"))
    c = claim_one(store)
    store.commit(c.lease, T0, LEASE, Batch((rec("s1", output=[1, 2]),)))
    store.deliver_event("r1", None, "go", {"x": 1}, sec(1))
    again = store.reload(c.lease)
    assert again is not None and again.lease == c.lease
    assert again.steps["s1"].output == [1, 2] and [e.data for e in again.mailbox] == [{"x": 1}]
    assert store.reload(Lease("r1", "w1", 99)) is None
    assert store.reload(Lease("missing", "w1", 1)) is None


# -- commit outcomes --------------------------------------------------------------------------------


def test_keep_running_records_steps_in_order(store: Store) -> None:
    """KeepRunning writes the step records (upserts keep their first position) and extends the lease."""
    store.start_run(new("r1"))
    c = claim_one(store)
    err = RunError("ValueError", "bad", "tb", "b")
    first = store.commit(c.lease, sec(10), LEASE, Batch((rec("b", "waiting"), rec("a"))))
    assert first.ok and not first.held
    second = store.commit(
        c.lease, sec(20), LEASE, Batch((rec("c", "failed", error=err), rec("b", output={"k": "v"})))
    )
    assert second.ok
    row, steps = store.get("r1", None)
    assert [s.step_id for s in steps] == ["b", "a", "c"]
    assert steps[0].status == "completed" and steps[0].output == {"k": "v"} and steps[2].error == err
    assert (
        row.lease_expires_at == sec(20) + LEASE and row.current_step_id == "b" and row.updated_at == sec(20)
    )
    assert store.claim("w2", [WF], sec(45), LEASE, 10) == []  # extended lease still held


def test_step_record_fields_round_trip(store: Store) -> None:
    """Every StepRecord field is stored and read back unchanged."""
    store.start_run(new("r1"))
    c = claim_one(store)
    full = StepRecord(
        "s", "wait_for", "waiting", "out", RunError("E", "m"), True, 3, T0, sec(1), sec(2), sec(3), "ev", 2
    )
    assert store.commit(c.lease, T0, LEASE, Batch((full,))).ok
    assert store.get("r1", None)[1] == [full]


def test_json_values_keep_dict_key_order(store: Store) -> None:
    """Input, output, step output and event data come back with their dict keys in the same order."""
    value = {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [{"q": 1, "a": 2}]}
    store.start_run(NewRun("r1", WF, None, value, 0, 1.0, None, None, T0))
    store.deliver_event("r1", None, "ev", value, T0)
    c = claim_one(store)
    assert list(c.run.input) == ["zeta", "alpha", "mid"] and list(c.mailbox[0].data) == [
        "zeta",
        "alpha",
        "mid",
    ]
    assert store.commit(c.lease, T0, LEASE, Batch((rec("s", output=value),), outcome=CompleteRun(value))).ok
    row, steps = store.get("r1", None)
    for got in (row.output, steps[0].output):
        assert got == value and list(got) == ["zeta", "alpha", "mid"] and list(got["alpha"]) == ["y", "b"]
        assert list(got["mid"][0]) == ["q", "a"]


def test_suspend_waits_and_releases_lease(store: Store) -> None:
    """SuspendRun parks the run at its step: paused, waiting, lease released, not claimable."""
    store.start_run(new("r1"))
    wait_for(store, "r1")
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.PAUSED and row.waiting == Waiting("w", "wait_for", "go")
    assert row.lease_owner is None and row.due_at is None and row.wake_at is None
    assert store.claim("w", [WF], sec(1000), LEASE, 10) == []


def test_suspend_with_timer_becomes_due(store: Store) -> None:
    """A suspended run with a wake time is claimable from then on."""
    store.start_run(new("r1"))
    suspend_at(store, "r1", rec("d", "waiting", "delay"), Waiting("d", "delay", None, sec(60)))
    row = store.get("r1", None)[0]
    assert row.wake_at == sec(60) and row.due_at == sec(60)
    assert store.claim("w", [WF], sec(59), LEASE, 10) == []
    assert claim_one(store, sec(60)).run.id == "r1"


def test_suspend_refused_when_mailbox_changed(store: Store) -> None:
    """An event delivered after the claim makes SuspendRun report mailbox_changed and write nothing."""
    store.start_run(new("r1"))
    c = claim_one(store)
    store.deliver_event("r1", None, "go", {"ok": True}, sec(1))
    outcome = SuspendRun(Waiting("w", "wait_for", "go"), None, c.run.mailbox_seq)
    result = store.commit(c.lease, sec(2), LEASE, Batch((rec("w", "waiting", "wait_for"),), outcome=outcome))
    assert not result.ok and result.mailbox_changed
    assert store.get("r1", None)[1] == []
    fresh = store.reload(c.lease)
    assert fresh is not None and [e.name for e in fresh.mailbox] == ["go"]
    consumed = Batch(
        (rec("w", kind="wait_for", output={"ok": True}),), ((fresh.mailbox[0].id, "w"),), KeepRunning()
    )
    assert store.commit(c.lease, sec(3), LEASE, consumed).ok
    again = store.reload(c.lease)
    assert again is not None and again.mailbox == []
    assert store.mailbox("r1") == [] and store.consumed_events("r1") == {fresh.mailbox[0].id: "w"}  # type: ignore[attr-defined]


def test_complete_run(store: Store) -> None:
    """CompleteRun ends the run with its output; nothing can be committed afterwards."""
    store.start_run(new("r1"))
    c = claim_one(store)
    done = store.commit(c.lease, sec(5), LEASE, Batch((rec("s1"),), outcome=CompleteRun({"ok": 1})))
    assert done.ok and not done.held
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.COMPLETED and row.output == {"ok": 1} and row.completed_at == sec(5)
    assert row.lease_owner is None and row.error is None
    assert not store.commit(c.lease, sec(6), LEASE, Batch((rec("s2"),))).ok
    assert store.reload(c.lease) is None


def test_fail_run(store: Store) -> None:
    """FailRun ends the run failed with its error."""
    store.start_run(new("r1"))
    c = claim_one(store)
    err = RunError("ValueError", "boom", "Traceback ...", "s1")
    assert store.commit(c.lease, sec(5), LEASE, Batch(outcome=FailRun(err))).ok
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.FAILED and row.error == err and row.completed_at == sec(5)


def test_retry_run(store: Store) -> None:
    """RetryRun makes the run pending again after a backoff, counting the attempt."""
    store.start_run(new("r1", retries=2))
    c = claim_one(store)
    err = RunError("ValueError", "boom")
    assert store.commit(c.lease, sec(1), LEASE, Batch(outcome=RetryRun(err, sec(3)))).ok
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.PENDING and row.retry_count == 1 and row.error == err
    assert row.wake_at == sec(3) and row.lease_owner is None
    assert store.claim("w", [WF], sec(2), LEASE, 10) == []
    assert claim_one(store, sec(3)).lease.token == 2


def test_release_run(store: Store) -> None:
    """ReleaseRun gives the run back: pending and claimable at once."""
    store.start_run(new("r1"))
    c = claim_one(store)
    assert store.commit(c.lease, sec(1), LEASE, Batch(outcome=ReleaseRun())).ok
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.PENDING and row.lease_owner is None
    assert claim_one(store, sec(1), "w2").lease == Lease("r1", "w2", 2)


def test_pause_while_running_reports_held(store: Store) -> None:
    """A run paused during its lease commits with held=True and stays paused after release."""
    store.start_run(new("r1"))
    c = claim_one(store)
    store.change("r1", None, "pause", None, sec(1))
    assert store.get("r1", None)[0].status == RunStatus.PAUSED
    result = store.commit(c.lease, sec(2), LEASE, Batch((rec("s1"),)))
    assert result.ok and result.held
    assert store.commit(c.lease, sec(3), LEASE, Batch(outcome=ReleaseRun())).held
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.PAUSED and row.held and row.lease_owner is None
    assert store.claim("w", [WF], sec(100), LEASE, 10) == []
    store.change("r1", None, "resume", None, sec(4))
    assert store.get("r1", None)[0].status == RunStatus.PENDING
    assert claim_one(store, sec(4)).run.status == RunStatus.RUNNING


def test_running_record_marks_the_current_step(store: Store) -> None:
    """A batch's running record is stored as is and names the run's current step (the first one
    starting); its outcome later replaces it in place, keeping its seq."""
    store.start_run(new("r1"))
    c = claim_one(store)
    done_a = rec("a", seq=1)
    starting = (rec("b", "running", seq=2, attempts=1), rec("c", "running", seq=3, attempts=1))
    assert store.commit(c.lease, sec(1), LEASE, Batch((done_a, *starting))).ok
    row, steps = store.get("r1", None)
    assert row.current_step_id == "b" and [(s.step_id, s.status, s.seq) for s in steps] == [
        ("a", "completed", 1), ("b", "running", 2), ("c", "running", 3),
    ]  # fmt: skip
    assert store.commit(c.lease, sec(2), LEASE, Batch((rec("c", seq=3, output=7),))).ok
    row, steps = store.get("r1", None)
    assert [(s.step_id, s.status) for s in steps] == [
        ("a", "completed"),
        ("b", "running"),
        ("c", "completed"),
    ]
    assert row.current_step_id == "c"


def test_a_held_run_takes_no_running_records(store: Store) -> None:
    """Paused while a step ran: that step's outcome is recorded, but the step about to start is not
    (nothing further runs), and the run stays at the step that finished."""
    store.start_run(new("r1"))
    c = claim_one(store)
    assert store.commit(c.lease, sec(1), LEASE, Batch((rec("a", "running", seq=1),))).ok
    store.change("r1", None, "pause", None, sec(2))
    result = store.commit(c.lease, sec(3), LEASE, Batch((rec("a", seq=1), rec("b", "running", seq=2))))
    assert result.ok and result.held
    row, steps = store.get("r1", None)
    assert [(s.step_id, s.status) for s in steps] == [("a", "completed")] and row.current_step_id == "a"


def test_steps_are_listed_in_seq_order(store: Store) -> None:
    """A run's records come back in their seq order, whatever order they were written in."""
    store.start_run(new("r1"))
    c = claim_one(store)
    assert store.commit(c.lease, sec(1), LEASE, Batch((rec("late", seq=3), rec("first", seq=1)))).ok
    assert store.commit(c.lease, sec(2), LEASE, Batch((rec("middle", seq=2),))).ok
    assert [s.step_id for s in store.get("r1", None)[1]] == ["first", "middle", "late"]
    assert [s.step_id for s in store.timelines(["r1"])["r1"]] == ["first", "middle", "late"]


# -- events and client actions ------------------------------------------------------------------------


def test_deliver_event_wakes_only_a_matching_waiter(store: Store) -> None:
    """An event wakes a run waiting for that name; other names are only buffered."""
    store.start_run(new("r1"))
    wait_for(store, "r1", "approve")
    written = store.deliver_event("r1", None, "other", None, sec(1))
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.PAUSED and row.mailbox_seq == 1
    assert written == store.get("r1", None)  # the run as written, with its timeline (the WaitFor's)
    written = store.deliver_event("r1", None, "approve", {"yes": True}, sec(2))
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.PENDING and row.due_at == sec(2)
    assert written == (row, store.get("r1", None)[1]) and [s.step_id for s in written[1]] == ["w"]
    c = claim_one(store, sec(2))
    assert [(e.name, e.data) for e in c.mailbox] == [("other", None), ("approve", {"yes": True})]
    assert c.mailbox[0].id < c.mailbox[1].id and c.mailbox[1].created_at == sec(2)


def test_deliver_event_errors(store: Store) -> None:
    """Unknown or foreign runs raise RunNotFoundError; ended runs raise InvalidStateError, storing nothing."""
    store.start_run(new("r1", resource="u1"))
    with pytest.raises(RunNotFoundError):
        store.deliver_event("nope", None, "go", None, T0)
    with pytest.raises(RunNotFoundError):
        store.deliver_event("r1", "u2", "go", None, T0)
    store.change("r1", None, "cancel", None, T0)
    with pytest.raises(InvalidStateError):
        store.deliver_event("r1", "u1", "go", None, T0)
    assert store.get("r1", None)[0].mailbox_seq == 0


def test_pause_resume_cancel(store: Store) -> None:
    """pause/resume/cancel follow the status rules, refusing invalid changes with InvalidStateError."""
    store.start_run(new("r1", resource="u1"))
    with pytest.raises(InvalidStateError, match="trigger_event"):
        store.change("r1", None, "resume", None, T0)
    store.change("r1", "u1", "pause", None, sec(1))
    row = store.get("r1", None)[0]
    assert row.held and row.status == RunStatus.PAUSED and row.paused_at == sec(1)
    with pytest.raises(InvalidStateError):
        store.change("r1", None, "pause", None, sec(2))
    store.change("r1", None, "resume", None, sec(3))
    row = store.get("r1", None)[0]
    assert not row.held and row.status == RunStatus.PENDING and row.resumed_at == sec(3)
    with pytest.raises(RunNotFoundError):
        store.change("r1", "u2", "cancel", None, sec(4))
    store.change("r1", None, "cancel", None, sec(4))
    row = store.get("r1", None)[0]
    assert row.status == RunStatus.CANCELLED and row.completed_at == sec(4)
    for action in ("pause", "resume", "cancel"):
        with pytest.raises(InvalidStateError):
            store.change("r1", None, action, None, sec(5))


def test_resume_completes_a_pause_step(store: Store) -> None:
    """resume on a run at a Pause step completes the step and makes the run ready."""
    store.start_run(new("r1"))
    suspend_at(store, "r1", rec("p", "waiting", "pause"), Waiting("p", "pause"))
    store.change("r1", None, "resume", None, sec(1))
    row, steps = store.get("r1", None)
    assert row.status == RunStatus.PENDING and row.waiting is None
    assert steps[0].status == "completed" and steps[0].completed_at == sec(1)


def test_fast_forward(store: Store) -> None:
    """fast_forward delivers data to a waiting step; a run neither waiting nor held is unchanged."""
    store.start_run(new("r1"))
    store.change("r1", None, "fast_forward", {"x": 1}, sec(1))
    assert store.get("r1", None)[0].updated_at == T0
    wait_for(store, "r1")
    store.change("r1", None, "fast_forward", {"x": 2}, sec(2))
    row, steps = store.get("r1", None)
    assert row.status == RunStatus.PENDING and steps[0].status == "completed" and steps[0].output == {"x": 2}
    store.change("r1", None, "cancel", None, sec(3))
    store.change("r1", None, "fast_forward", None, sec(4))
    assert store.get("r1", None)[0].status == RunStatus.CANCELLED
    store.start_run(new("r2"))
    with pytest.raises(ValueError):
        store.change("r2", None, "explode", None, sec(5))


def test_resume_with_buffered_event_wakes_waiter(store: Store) -> None:
    """Resuming a held run that waits for an already-buffered event makes it ready at once."""
    store.start_run(new("r1"))
    wait_for(store, "r1")
    store.change("r1", None, "pause", None, sec(1))
    store.deliver_event("r1", None, "go", {}, sec(2))
    assert store.get("r1", None)[0].status == RunStatus.PAUSED
    store.change("r1", None, "resume", None, sec(3))
    assert store.get("r1", None)[0].status == RunStatus.PENDING


# -- children ---------------------------------------------------------------------------------------------


def start_child(store: Store, parent: str, child: str, now: Any = T0) -> None:
    c = claim_one(store, now)
    assert c.run.id == parent
    step = rec("c", "waiting", "child", output={"child_run_id": child})
    batch = Batch(
        (step,),
        outcome=SuspendRun(Waiting("c", "child"), None, c.run.mailbox_seq),
        children=(StartChild(new(child, parent_run_id=parent, parent_step_id="c", now=now)),),
    )
    assert store.commit(c.lease, now, LEASE, batch).ok


def test_child_completion_settles_parent_step(store: Store) -> None:
    """A child run completing completes the parent's Child step with its output and wakes the parent."""
    store.start_run(new("p"))
    start_child(store, "p", "k")
    child = store.get("k", None)[0]
    assert child.status == RunStatus.PENDING and (child.parent_run_id, child.parent_step_id) == ("p", "c")
    c = claim_one(store, sec(1))
    assert c.run.id == "k"
    assert store.commit(c.lease, sec(2), LEASE, Batch(outcome=CompleteRun({"v": 7}))).ok
    parent, steps = store.get("p", None)
    assert parent.status == RunStatus.PENDING and parent.waiting is None
    assert steps[0].status == "completed" and steps[0].output == {"v": 7}


def test_child_failure_fails_parent_step(store: Store) -> None:
    """A failed child settles the parent's Child step as failed with ChildFailedError."""
    store.start_run(new("p"))
    start_child(store, "p", "k")
    c = claim_one(store, sec(1))
    assert store.commit(c.lease, sec(2), LEASE, Batch(outcome=FailRun(RunError("KeyError", "x")))).ok
    step = store.get("p", None)[1][0]
    assert step.status == "failed" and step.error is not None and step.error.type == "ChildFailedError"


def test_cancel_cascades_to_children(store: Store) -> None:
    """Cancelling a run cancels its live children recursively and settles its Child step."""
    store.start_run(new("p"))
    start_child(store, "p", "k")
    start_child(store, "k", "g", sec(1))
    store.start_run(new("done", wf="wf2", parent_run_id="p", parent_step_id="x"))
    done = claim_one(store, sec(2), wf="wf2")
    assert done.run.id == "done"
    store.commit(done.lease, sec(2), LEASE, Batch(outcome=CompleteRun(None)))
    store.change("p", None, "cancel", None, sec(3))
    statuses = {r: store.get(r, None)[0].status for r in ("p", "k", "g", "done")}
    assert statuses == {
        "p": RunStatus.CANCELLED,
        "k": RunStatus.CANCELLED,
        "g": RunStatus.CANCELLED,
        "done": RunStatus.COMPLETED,
    }
    assert store.get("p", None)[1][0].status == "failed"
    assert store.get("k", None)[0].completed_at == sec(3)
    assert store.get("g", None)[0].completed_at == sec(3)  # the whole cascade ends at the cancel's time
    assert [s.completed_at for r in ("p", "k") for s in store.get(r, None)[1]] == [sec(3), sec(3)]


# -- listing, scheduling, heartbeats -----------------------------------------------------------------------


def make_35(store: Store) -> list[str]:
    ids = []
    for i in range(35):
        run_id = f"run-{i:02d}"
        store.start_run(new(run_id, now=sec(i // 3), resource="u1" if i % 2 else "u2"))  # ties of 3
        ids.append(run_id)
    return sorted(ids, key=lambda r: (int(r[4:]) // 3, r), reverse=True)


def test_list_runs_pages_forward_and_back(store: Store) -> None:
    """35 runs page 10/10/10/5 newest first (ties by id); walking back reproduces the pages."""
    expected = make_35(store)
    pages, cursor = [], None
    while True:
        items, has_more, has_prev = store.list_runs(RunQuery(limit=10, starting_after=cursor))
        pages.append(([r.id for r in items], has_more, has_prev))
        if not has_more:
            break
        cursor = items[-1].id
    assert [len(p[0]) for p in pages] == [10, 10, 10, 5]
    assert [p[1:] for p in pages] == [(True, False), (True, True), (True, True), (False, True)]
    assert [r for p in pages for r in p[0]] == expected
    for i in range(3, 0, -1):
        items, has_more, has_prev = store.list_runs(RunQuery(limit=10, ending_before=pages[i][0][0]))
        assert [r.id for r in items] == pages[i - 1][0]
        assert has_more and has_prev == (i - 1 > 0)


def test_list_runs_full_last_page_has_no_more(store: Store) -> None:
    """When the runs fill their pages exactly, the last page says there is no more (and a single
    full page has neither more nor previous)."""
    for i in range(20):
        store.start_run(new(f"run-{i:02d}", now=sec(i)))
    first, more, prev = store.list_runs(RunQuery(limit=20))
    assert len(first) == 20 and (more, prev) == (False, False)
    page1, more1, _ = store.list_runs(RunQuery(limit=10))
    page2, more2, prev2 = store.list_runs(RunQuery(limit=10, starting_after=page1[-1].id))
    assert [len(page1), len(page2)] == [10, 10] and (more1, more2, prev2) == (True, False, True)


def test_list_runs_filters(store: Store) -> None:
    """Filters on resource, workflow and statuses combine with AND."""
    make_35(store)
    store.start_run(new("x1", wf="other", resource="u1"))
    store.change("run-01", None, "cancel", None, sec(20))
    items, _, _ = store.list_runs(RunQuery(resource_id="u1", limit=100))
    assert len(items) == 18 and all(r.resource_id == "u1" for r in items)
    items, _, _ = store.list_runs(RunQuery(workflow_id="other", limit=100))
    assert [r.id for r in items] == ["x1"]
    items, _, _ = store.list_runs(RunQuery(resource_id="u1", statuses=("cancelled",), limit=100))
    assert [r.id for r in items] == ["run-01"]
    items, more, _ = store.list_runs(RunQuery(workflow_id=WF, statuses=("pending", "running"), limit=5))
    assert len(items) == 5 and more


def test_list_runs_unknown_cursor(store: Store) -> None:
    """A cursor that is not a run id raises InvalidArgumentError naming it."""
    store.start_run(new("r1"))
    for side in ("starting_after", "ending_before"):
        with pytest.raises(InvalidArgumentError) as info:
            store.list_runs(RunQuery(**{side: "nope"}))
        assert str(info.value) == "unknown cursor 'nope': pass a run id from a previous page"


@pytest.mark.parametrize("cursor_side", ["starting_after", "ending_before"])
def test_a_cursor_cannot_probe_another_tenant(store: Store, cursor_side: str) -> None:
    """With resource_id, a cursor naming another resource's run (or a run of none) raises exactly the
    error of an unknown cursor, so a tenant cannot learn that the run exists."""
    store.start_run(new("a1", resource="A"))
    store.start_run(new("n1"))
    store.start_run(new("b1", resource="B", now=sec(1)))
    messages = []
    for cursor in ("a1", "n1", "no-such-run"):
        with pytest.raises(InvalidArgumentError) as caught:
            store.list_runs(RunQuery(resource_id="B", **{cursor_side: cursor}))
        messages.append(str(caught.value).replace(repr(cursor), "<cursor>"))
    assert len(set(messages)) == 1
    assert store.list_runs(RunQuery(resource_id="B", **{cursor_side: "b1"}))[0] == []  # its own works


def test_an_expired_lease_is_claimed_before_a_backlog_of_due_runs(store: Store) -> None:
    """A run whose lease expired (its worker died) is claimed ahead of runs merely due, even ones
    due long before: a takeover never waits behind the backlog."""
    store.start_run(new("crashed", now=sec(50)))
    dead = claim_one(store, sec(50), "dead-worker")
    for i in range(5):
        store.start_run(new(f"backlog-{i}", now=sec(i)))  # due since 0-4 s, before the crashed run
    first = store.claim("w2", [WF], sec(50) + LEASE, LEASE, 1)
    assert [c.run.id for c in first] == ["crashed"] and first[0].lease.token == dead.lease.token + 1
    rest = store.claim("w2", [WF], sec(50) + LEASE, LEASE, 10)
    assert [c.run.id for c in rest] == [f"backlog-{i}" for i in range(5)]


def test_next_due(store: Store) -> None:
    """next_due is the earliest due time or lease expiry among live runs of the given workflows."""
    assert store.next_due([WF]) is None
    store.start_run(new("r1", now=sec(5)))
    store.start_run(new("r2", wf="wf2", now=sec(1)))
    assert store.next_due([WF]) == sec(5)
    assert store.next_due([WF, "wf2"]) == sec(1)
    assert store.next_due([]) is None
    c = claim_one(store, sec(5))
    assert store.next_due([WF]) == sec(5) + LEASE
    store.commit(
        c.lease, sec(6), LEASE, Batch(outcome=SuspendRun(Waiting("d", "delay", None, sec(50)), sec(50), 0))
    )
    assert store.next_due([WF]) == sec(50)
    store.change("r1", None, "cancel", None, sec(7))
    assert store.next_due([WF]) is None


def test_heartbeat(store: Store) -> None:
    """A heartbeat extends live leases in one call and reports the live runs whose lease is lost (a
    run that ended meanwhile, e.g. cancelled or completed by its worker, lost nothing)."""
    store.start_run(new("r1"))
    store.start_run(new("r2"))
    store.start_run(new("r3"))
    a, b, c = store.claim("w1", [WF], T0, LEASE, 10)
    assert store.heartbeat([a.lease, b.lease, c.lease], sec(20), LEASE) == set()
    assert store.get(a.run.id, None)[0].lease_expires_at == sec(50)
    assert store.claim("w2", [WF], sec(40), LEASE, 10) == []
    store.change(b.run.id, None, "cancel", None, sec(41))
    assert store.heartbeat([a.lease, b.lease], sec(45), LEASE) == set()
    taken = claim_one(store, sec(60), "w2")  # c's lease expired at 50: another worker takes it
    assert taken.run.id == c.run.id
    assert store.heartbeat([a.lease, c.lease], sec(61), LEASE) == {c.run.id}
    assert store.heartbeat([a.lease], sec(95), LEASE) == {a.run.id}  # its lease ran out at 91
    assert store.heartbeat([], sec(80), LEASE) == set()


def test_heartbeat_extends_every_live_lease_whatever_comes_before_it(store: Store) -> None:
    """A lease lost early in the list (a run taken over, or one that ended) does not keep the live ones
    after it from being extended."""
    store.start_run(new("r0"))
    store.start_run(new("r1"))
    store.start_run(new("r2"))
    store.start_run(new("r3"))
    z, a, b, c = sorted(store.claim("w1", [WF], T0, LEASE, 10), key=lambda x: x.run.id)
    store.change(a.run.id, None, "cancel", None, sec(1))  # ended: it lost nothing
    store.heartbeat([b.lease, c.lease], sec(25), LEASE)
    assert claim_one(store, sec(31), "w2").run.id == "r0"  # z's lease ran out at 30: taken over
    assert store.heartbeat([z.lease, a.lease, b.lease, c.lease], sec(20 + 30), LEASE) == {"r0"}
    assert [store.get(r, None)[0].lease_expires_at for r in ("r2", "r3")] == [sec(80), sec(80)]


# -- Postgres only ----------------------------------------------------------------------------------------


@pytest.fixture
def pg(pg_dsn: str, pg_schema: str) -> Iterator[PostgresStore]:
    """A migrated PostgresStore in a fresh schema."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=8, open=True) as pool:
        store = PostgresStore(pool, schema=pg_schema)
        store.migrate()
        with pool.connection() as conn:
            conn.execute(sql.SQL("CREATE TABLE {}.ledger (v int)").format(sql.Identifier(pg_schema)))
        yield store
        store.close()


class _Tx:
    """A stand-in for ``pgflow.commands.Transaction``: ``step_id``, ``fn``, ``args``."""

    def __init__(self, step_id: str, fn: Any, *args: Any) -> None:
        self.step_id, self.fn, self.args = step_id, fn, args


def _insert(schema: str) -> Any:
    def fn(conn: psycopg.Connection[Any], value: int) -> dict[str, int]:
        conn.execute(sql.SQL("INSERT INTO {}.ledger VALUES (%s)").format(sql.Identifier(schema)), (value,))
        return {"inserted": value}

    return fn


def _ledger(store: PostgresStore) -> list[int]:
    with store._pool.connection() as conn:
        query = sql.SQL("SELECT v FROM {}.ledger ORDER BY v").format(sql.Identifier(store.schema))
        return [r[0] for r in conn.execute(query).fetchall()]


@pytest.mark.postgres
def test_transaction_commits_with_the_step(pg: PostgresStore) -> None:
    """A Transaction step's writes and its completed record commit together."""
    pg.start_run(new("r1"))
    c = claim_one(pg)
    base = rec("t", "running", "transaction", attempts=1)  # the step's running record
    result = pg.commit(
        c.lease, sec(1), LEASE, Batch((rec("s0"),)), transaction=(_Tx("t", _insert(pg.schema), 7), base)
    )
    assert result.ok and result.transaction_result is not None
    assert result.transaction_result.status == "completed" and result.transaction_result.output == {
        "inserted": 7
    }
    assert _ledger(pg) == [7]
    steps = pg.get("r1", None)[1]
    assert (
        [s.step_id for s in steps] == ["s0", "t"]
        and steps[1].attempts == 1
        and steps[1].completed_at == sec(1)
    )


@pytest.mark.postgres
def test_transaction_failure_rolls_back_everything(pg: PostgresStore) -> None:
    """If the step function raises, its writes and the batch roll back and the error propagates."""
    pg.start_run(new("r1"))
    c = claim_one(pg)
    insert = _insert(pg.schema)

    def boom(conn: psycopg.Connection[Any]) -> None:
        insert(conn, 1)
        raise KeyError("nope")

    with pytest.raises(KeyError):
        pg.commit(
            c.lease, sec(1), LEASE, Batch((rec("s0"),)), transaction=(_Tx("t", boom), rec("t", "waiting"))
        )
    with pytest.raises(psycopg.errors.UndefinedTable):  # the user's own SQL error is not wrapped
        pg.commit(
            c.lease,
            sec(1),
            LEASE,
            Batch(),
            transaction=(_Tx("t", lambda cn: cn.execute("SELECT * FROM nope")), rec("t", "waiting")),
        )
    assert _ledger(pg) == [] and pg.get("r1", None)[1] == []


@pytest.mark.postgres
def test_transaction_not_run_without_lease(pg: PostgresStore) -> None:
    """With a lost lease the step function is never called and nothing is written."""
    pg.start_run(new("r1"))
    c = claim_one(pg)
    called = []
    result = pg.commit(
        c.lease, sec(99), LEASE, Batch(), transaction=(_Tx("t", called.append), rec("t", "waiting"))
    )
    assert not result.ok and called == []


@pytest.mark.postgres
def test_concurrent_duplicate_starts(pg: PostgresStore) -> None:
    """Ten concurrent starts with one idempotency key create exactly one run."""
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def start(i: int) -> None:
        barrier.wait()
        row, created = pg.start_run(new(f"r{i}", key="same"))
        results.append((row.id, created))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({rid for rid, _ in results}) == 1 and sum(created for _, created in results) == 1


@pytest.mark.postgres
def test_concurrent_claims_never_share_a_run(pg: PostgresStore) -> None:
    """Workers claiming at once (SKIP LOCKED) each get distinct runs, all runs claimed once."""
    for i in range(20):
        pg.start_run(new(f"r{i:02d}"))
    got: list[str] = []
    barrier = threading.Barrier(4)

    def work(owner: str) -> None:
        barrier.wait()
        got.extend(c.run.id for c in pg.claim(owner, [WF], T0, LEASE, 7))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"r{i:02d}" for i in range(20)]


@pytest.mark.postgres
def test_wakeup_notifications(pg: PostgresStore) -> None:
    """wait_for_wakeup returns True after a start commits elsewhere, False on timeout."""
    pg.listen()
    assert pg.wait_for_wakeup(0.05) is False
    pg.start_run(new("r1"))
    assert pg.wait_for_wakeup(5) is True
    assert pg.wait_for_wakeup(0.05) is False


@pytest.mark.postgres
def test_watch_run_sees_status_changes(pg: PostgresStore) -> None:
    """A run waiter wakes when that run's status changes, not for other runs; many waiters share the
    store's one LISTEN connection."""
    pg.start_run(new("r1"))
    pg.start_run(new("r2"))
    with pg.watch_run("r1") as waiter, pg.watch_run("r1") as twin, pg.watch_run("r2") as other:
        pg.change("r2", None, "pause", None, sec(1))
        assert waiter.wait(0.1) is False and other.wait(5) is True
        pg.change("r1", None, "cancel", None, sec(1))
        assert waiter.wait(5) is True and twin.wait(5) is True
        assert waiter.wait(0.05) is False  # one change, one wake-up
    pg.start_run(new("r3"))
    with pg.watch_run("r3") as waiter:
        claim_one(pg, sec(2))  # pending -> running is a status change too (wait_for_run until running)
        assert waiter.wait(5) is True
    assert _listen_connections(pg) == 1


@pytest.mark.postgres
def test_a_new_run_is_not_announced_on_the_runs_channel(pg: PostgresStore) -> None:
    """Starting a run wakes the workers but announces no status: nobody can be waiting for a run that
    did not exist, and an announcement would wake every waiter of the id for a needless re-read. Its
    claim (pending -> running) is announced."""
    pg.listen()
    with pg.watch_run("r1") as waiter:
        pg.start_run(new("r1"))
        assert pg.wait_for_wakeup(5) is True
        assert waiter.wait(0.2) is False
        claim_one(pg, sec(2))
        assert waiter.wait(5) is True


@pytest.mark.postgres
def test_an_event_to_a_run_paused_without_a_wait_only_counts(pg: PostgresStore) -> None:
    """transitions.deliver_event's "paused, waiting for nothing" case in the one-statement delivery:
    counted in mailbox_seq, nothing else changes (a NULL wait must not read as a match)."""
    pg.start_run(new("r1"))
    with pg._pool.connection() as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET status = 'paused', due_at = NULL WHERE id = 'r1'").format(
                sql.Identifier(pg.schema, "runs")
            )
        )
    before = pg.get("r1", None)[0]
    written = pg.deliver_event("r1", None, "go", {}, sec(1))
    after = pg.get("r1", None)[0]
    assert written is not None and written[0] == after
    assert (
        after
        == attrs.evolve(before, mailbox_seq=1, updated_at=sec(1))
        == tr.deliver_event(before, "go", sec(1))
    )


def test_only_a_worker_listens_for_wake_ups(store: Store) -> None:
    """A store that only waits for runs (a Client's) LISTENs on the runs channel alone: the server
    does not signal it for every run started anywhere. ``listen()`` (a worker's) adds the wake
    channel, on the connection already listening."""
    if isinstance(store, MemoryStore):
        pytest.skip("the in-memory store has no LISTEN")
    hub = store.store._hub if isinstance(store, BlockingBridge) else store._hub  # type: ignore[attr-defined]
    store.start_run(new("r1"))
    with store.watch_run("r1") as waiter:
        store.start_run(new("r2"))
        store.change("r1", None, "cancel", None, sec(1))
        assert waiter.wait(5) is True  # the runs channel is listened to
    assert not hub._wake_listened.is_set() and not hub._wake.is_set()
    store.listen()
    assert hub._wake_listened.is_set()
    store.start_run(new("r3"))
    assert store.wait_for_wakeup(5) is True


def _listen_connections(pg: PostgresStore) -> int:
    """Server sessions whose last statement LISTENed on this store's runs channel."""
    from pgflow.postgres.listen import channel

    with pg._pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{channel("runs", pg.schema)}"',),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_waiter_registered_before_a_read_misses_no_change(store: Store) -> None:
    """A change committed between the waiter's registration and its wait wakes it at once."""
    store.start_run(new("r1"))
    store.listen()
    with store.watch_run("r1") as waiter:
        store.change("r1", None, "cancel", None, sec(1))
        assert waiter.wait(5) is True


@pytest.mark.postgres
def test_storage_errors_are_translated(pg_dsn: str, pg_schema: str) -> None:
    """A database error surfaces as StorageError with the psycopg error as its cause."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStore(pool, schema=pg_schema)  # not migrated: tables are missing
        with pytest.raises(StorageError) as info:
            store.get("r1", None)
        assert isinstance(info.value.__cause__, psycopg.Error)


def _round_trips(pool: ConnectionPool[Any], action: Any, tmp_path: Any) -> int:
    """How many request bursts ``action`` sends on the pool's only connection (libpq trace)."""
    trace = tmp_path / "trace.txt"
    with trace.open("w") as out:
        with pool.connection() as conn:
            conn.pgconn.trace(out.fileno())
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
        try:
            action()
        finally:
            with pool.connection() as conn:
                conn.pgconn.untrace()
    bursts, previous = 0, None
    for line in trace.read_text().splitlines():
        if line[:2] in ("F\t", "B\t"):
            bursts += line[0] == "F" and previous != "F"
            previous = line[0]
    return bursts


@pytest.mark.postgres
def test_a_claim_commits_asynchronously_without_leaking_the_setting(pg_dsn: str, pg_schema: str) -> None:
    """Both claims (plain, limited) commit without waiting for their WAL flush (set_config(..., true):
    their own transaction only; see the claim query), and the pooled connection is synchronous again
    afterwards: every other write on it (a step's record, a start) waits for its flush."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True}) as pool:
        pg = PostgresStore(pool, schema=pg_schema)
        pg.migrate()
        pg.register_workflow("limited", [], T0, {"retries": 0, "concurrency": 1, "key_concurrency": None})
        pg.start_run(new("plain"))
        pg.start_run(new("capped", wf="limited"))
        for wf, limited, run_id in ((WF, [], "plain"), ("limited", ["limited"], "capped")):
            assert [c.run.id for c in pg.claim("w", [wf], T0, LEASE, 5, limited)] == [run_id]
            with pool.connection() as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        texts = {
            "claim": pg._q.render("claim", {"limit": sql.Literal(5)}),
            "claim_ids": pg._q["claim_ids"],
        }
        for name, text in texts.items():
            assert b"set_config('synchronous_commit', 'off', true)" in text, name


@pytest.mark.postgres
def test_hot_path_commit_is_one_round_trip(pg_dsn: str, pg_schema: str, tmp_path: Any) -> None:
    """A KeepRunning batch of step records costs one round trip, and so does a claim (one statement
    that leases the runs and loads their histories); a suspend costs two; delivering the event the
    run waits for costs one."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True) as pool:
        pg = PostgresStore(pool, schema=pg_schema)
        pg.migrate()
        pg.start_run(new("r1"))
        claimed: list[Claimed] = []
        assert _round_trips(pool, lambda: claimed.extend(pg.claim("w", [WF], T0, LEASE, 5)), tmp_path) == 1
        lease = claimed[0].lease
        batch = Batch((rec("a"), rec("b", "waiting")))
        assert _round_trips(pool, lambda: pg.commit(lease, T0, LEASE, batch), tmp_path) == 1
        suspend = Batch(
            (rec("w", "waiting", "wait_for"),), outcome=SuspendRun(Waiting("w", "wait_for", "e"), None, 0)
        )
        assert _round_trips(pool, lambda: pg.commit(lease, T0, LEASE, suspend), tmp_path) == 2
        assert [s.step_id for s in pg.get("r1", None)[1]] == ["a", "b", "w"]
        pg.listen()
        assert _round_trips(pool, lambda: pg.deliver_event("r1", None, "e", {"n": 1}, sec(1)), tmp_path) == 1
        woken = pg.get("r1", None)[0]
        assert (woken.status, woken.waiting, woken.due_at, woken.mailbox_seq) == ("pending", None, sec(1), 1)
        assert pg.wait_for_wakeup(5) is True and [e.data for e in pg.run_mailbox("r1", None)] == [{"n": 1}]


def _claim_while(pg: PostgresStore, now: Any, client_action: Any) -> Claimed:
    """Claim with the statement stalled 0.5 s after taking its snapshot, before it locks any row,
    while ``client_action`` commits a change to the run (fault injection in the claim's SQL)."""
    limit = {"limit": sql.Literal(10)}  # the claim's text has its limit (ops.claim)
    original = pg._q.render("claim", limit)
    key = next(k for k, text in pg._q._rendered.items() if text is original)
    due = b"AND due_at <= %(now)s"
    pg._q._rendered[key] = original.replace(due, due + b" AND (SELECT true FROM pg_sleep(0.5))")
    assert pg._q.render("claim", limit) != original
    claimed: list[Claimed] = []
    worker = threading.Thread(target=lambda: claimed.extend(pg.claim("w1", [WF], now, LEASE, 10)))
    worker.start()
    time.sleep(0.15)
    client_action()
    worker.join()
    pg._q._rendered[key] = original
    assert len(claimed) == 1
    return claimed[0]


@pytest.mark.postgres
def test_claim_sees_an_event_delivered_while_it_waits_for_the_row(pg: PostgresStore) -> None:
    """An event committed after the claim took its snapshot but before it locked the run is in the
    claimed mailbox. (READ COMMITTED locks the row's newest version, whose mailbox_seq counts the
    event, while the snapshot's mailbox lacks it: the worker's suspend at its WaitFor would then be
    accepted and the event stranded, the run paused for good.)"""
    pg.start_run(new("r1"))
    c = _claim_while(pg, T0, lambda: pg.deliver_event("r1", None, "go", {"n": 1}, sec(0.1)))
    assert c.run.mailbox_seq == 1
    assert [(e.name, e.data) for e in c.mailbox] == [("go", {"n": 1})]


@pytest.mark.postgres
def test_claim_sees_a_step_fast_forwarded_while_it_waits_for_the_row(pg: PostgresStore) -> None:
    """A Delay fast-forwarded just as it falls due, while the claim is in flight: the claimed step
    records are the ones the claimed run row goes with (the step completed, not still waiting)."""
    pg.start_run(new("r1"))
    suspend_at(pg, "r1", rec("d", "waiting", "delay", wake_at=sec(5)), Waiting("d", "delay", None, sec(5)))
    c = _claim_while(pg, sec(5), lambda: pg.change("r1", None, "fast_forward", None, sec(5)))
    assert c.run.waiting is None and c.steps["d"].status == "completed"


# -- reads for the dashboard: counts, registered workflows, mailbox, child runs ---------------------------


def test_count_runs_by_status_with_filters(store: Store) -> None:
    """count_runs counts runs per status under the workflow and resource filters (AND)."""
    assert store.count_runs(None, None) == {}
    store.start_run(new("a", resource="u1"))
    store.start_run(new("b", resource="u2"))
    store.start_run(new("c", wf="other", resource="u1"))
    store.change("b", None, "cancel", None, sec(1))
    assert store.count_runs(None, None) == {"pending": 2, "cancelled": 1}
    assert store.count_runs(WF, None) == {"pending": 1, "cancelled": 1}
    assert store.count_runs(None, "u1") == {"pending": 2}
    assert store.count_runs("other", "u2") == {}


def test_list_workflows_gives_steps_and_registration_time(store: Store) -> None:
    """list_workflows lists every registered workflow by id, with its latest steps and time."""
    steps = (StepInfo("a", "run"), StepInfo("w", "wait_for", conditional=True))
    store.register_workflow("wf-b", steps, T0)
    store.register_workflow("wf-a", steps[:1], T0)
    store.register_workflow("wf-a", steps, sec(2))
    found = store.list_workflows()
    assert [w.id for w in found] == ["wf-a", "wf-b"]
    assert found[0].steps == steps and found[0].registered_at == sec(2)
    assert found[1].registered_at == T0


def test_run_mailbox_lists_unconsumed_events_in_scope(store: Store) -> None:
    """run_mailbox gives the unconsumed events oldest first; another resource's run is not found."""
    store.start_run(new("r1", resource="u1"))
    assert store.run_mailbox("r1", None) == []
    store.deliver_event("r1", None, "first", {"n": 1}, sec(1))
    store.deliver_event("r1", None, "second", {}, sec(2))
    box = store.run_mailbox("r1", "u1")
    assert [(e.name, e.data, e.created_at) for e in box] == [
        ("first", {"n": 1}, sec(1)),
        ("second", {}, sec(2)),
    ]
    with pytest.raises(RunNotFoundError):
        store.run_mailbox("r1", "u2")
    with pytest.raises(RunNotFoundError):
        store.run_mailbox("nope", None)


def test_run_mailbox_leaves_out_consumed_events(store: Store) -> None:
    """An event a WaitFor consumed is no longer in the mailbox."""
    store.start_run(new("r1"))
    store.deliver_event("r1", None, "go", {}, T0)
    store.deliver_event("r1", None, "later", {}, T0)
    c = claim_one(store, sec(1))
    taken = c.mailbox[0]
    step = rec("w", "completed", "wait_for", event="go")
    assert store.commit(c.lease, sec(1), LEASE, Batch((step,), consumed=((taken.id, "w"),))).ok
    assert [e.name for e in store.run_mailbox("r1", None)] == ["later"]


def test_child_runs_in_creation_order_and_scope(store: Store) -> None:
    """child_runs lists a run's children oldest first; with a resource, only that resource's."""
    store.start_run(new("p", resource="u1"))
    start_child(store, "p", "k1")
    store.start_run(new("k2", wf="wf2", resource="u1", parent_run_id="p", parent_step_id="x", now=sec(1)))
    store.start_run(new("k3", wf="wf2", resource="u2", parent_run_id="p", parent_step_id="y", now=sec(2)))
    assert [r.id for r in store.child_runs("p", None)] == ["k1", "k2", "k3"]
    assert [r.id for r in store.child_runs("p", "u1")] == ["k2"]
    assert store.child_runs("k1", None) == []
    with pytest.raises(RunNotFoundError):
        store.child_runs("p", "u2")


# -- retry_run: re-driving a failed or cancelled run (SPEC §14) -------------------------------------------

BOOM = RunError("ValueError", "boom", "Traceback ...", "c")


def fail_with(store: Store, run_id: str, steps: tuple[StepRecord, ...], now: Any = T0) -> None:
    """Claim ``run_id`` and end it failed, recording ``steps`` with the failure."""
    c = claim_one(store, now)
    assert c.run.id == run_id
    assert store.commit(c.lease, now, LEASE, Batch(steps, outcome=FailRun(BOOM))).ok


def step_ids(store: Store, run_id: str) -> list[str]:
    return [s.step_id for s in store.get(run_id, None)[1]]


def test_retry_run_makes_a_failed_run_pending_again(store: Store) -> None:
    """A failed run is pending and clean again, keeps its completed records, loses its failed one."""
    store.start_run(new("r1", retries=2, timeout_at=sec(100)))
    c = claim_one(store)
    assert store.commit(c.lease, T0, LEASE, Batch((rec("a", seq=1),), outcome=RetryRun(BOOM, sec(2)))).ok
    fail_with(store, "r1", (rec("b", seq=2), rec("c", "failed", seq=3, error=BOOM)), sec(2))
    assert store.get("r1", None)[0].retry_count == 1
    row = store.retry_run("r1", None, None, sec(200))
    assert store.get("r1", None)[0] == row
    assert (row.status, row.due_at, row.error, row.completed_at, row.retry_count) == (
        RunStatus.PENDING, sec(200), None, None, 0,
    )  # fmt: skip
    assert row.timeout_at == sec(300) and row.lease_owner is None and row.updated_at == sec(200)
    assert step_ids(store, "r1") == ["a", "b"]
    again = claim_one(store, sec(200))
    assert sorted(again.steps) == ["a", "b"] and again.lease.token == 3 and again.run.retry_count == 0


def test_retry_run_of_a_cancelled_run_keeps_its_mailbox(store: Store) -> None:
    """A cancelled run loses its cut-short wait's record and keeps its unconsumed events."""
    store.start_run(new("r1"))
    wait_for(store, "r1", "approve")
    store.deliver_event("r1", None, "note", {"n": 1}, sec(1))
    store.change("r1", None, "cancel", None, sec(2))
    row = store.retry_run("r1", None, None, sec(3))
    assert row.status == RunStatus.PENDING and row.waiting is None and step_ids(store, "r1") == []
    c = claim_one(store, sec(3))
    assert [(e.name, e.data) for e in c.mailbox] == [("note", {"n": 1})] and c.steps == {}


def test_retry_run_from_step_releases_the_events_of_discarded_wait_fors(store: Store) -> None:
    """from_step deletes a suffix and gives its WaitFors' events back, in their place."""
    store.start_run(new("r1"))
    for n in range(3):
        store.deliver_event("r1", None, "go", {"n": n}, T0)
    c = claim_one(store)
    first, second, spare = c.mailbox
    taken = (
        rec("a", seq=1), rec("w1", kind="wait_for", seq=2, event="go", output={"n": 0}),
        rec("w2", kind="wait_for", seq=3, event="go", output={"n": 1}), rec("c", "failed", seq=4, error=BOOM),
    )  # fmt: skip
    batch = Batch(taken, ((first.id, "w1"), (second.id, "w2")), FailRun(BOOM))
    assert store.commit(c.lease, sec(1), LEASE, batch).ok
    store.retry_run("r1", None, "w2", sec(2))
    assert step_ids(store, "r1") == ["a", "w1"]
    assert store.mailbox("r1") == [second, spare]  # type: ignore[attr-defined]
    assert store.consumed_events("r1") == {first.id: "w1"}  # type: ignore[attr-defined]


def test_retry_run_retries_a_failure_that_kept_records_follow_at_its_place(store: Store) -> None:
    """A failure kept records follow is re-marked as an earlier attempt's, at its seq."""
    store.start_run(new("r1"))
    steps = (rec("x", "failed", seq=1, error=BOOM), rec("y", seq=2), rec("z", "failed", seq=3, error=BOOM))
    fail_with(store, "r1", steps)
    store.retry_run("r1", None, None, sec(1))
    found = store.get("r1", None)[1]
    assert [(s.step_id, s.status, s.seq, s.run_attempt) for s in found] == [
        ("x", "failed", 1, -1),
        ("y", "completed", 2, 0),
    ]
    assert found[0].error == BOOM


def test_retry_run_refusals_change_nothing(store: Store) -> None:
    """Wrong states, other tenants and unknown from_steps are refused and change nothing."""
    store.start_run(new("pending", wf="wf2", resource="u1"))  # never claimed here
    store.start_run(new("held"))
    store.change("held", None, "pause", None, T0)
    store.start_run(new("running", now=sec(1)))
    claim_one(store, sec(1))
    store.start_run(new("done", now=sec(2)))
    c = claim_one(store, sec(2))
    store.commit(c.lease, sec(2), LEASE, Batch((rec("a", seq=1),), outcome=CompleteRun(1)))
    for run_id, status in [
        ("pending", "pending"),
        ("held", "paused"),
        ("running", "running"),
        ("done", "completed"),
    ]:
        before = store.get(run_id, None)
        with pytest.raises(InvalidStateError, match=f"cannot retry run {run_id} .*it is {status}"):
            store.retry_run(run_id, None, "a", sec(3))
        assert store.get(run_id, None) == before
    store.change("pending", None, "cancel", None, sec(3))
    for run_id, resource in [("pending", "u2"), ("nope", None)]:
        with pytest.raises(RunNotFoundError, match=run_id):
            store.retry_run(run_id, resource, None, sec(4))
    before = store.get("pending", None)
    with pytest.raises(InvalidArgumentError, match="from_step 'a'"):
        store.retry_run("pending", "u1", "a", sec(4))
    assert store.get("pending", None) == before
    assert store.retry_run("pending", "u1", None, sec(4)).status == RunStatus.PENDING


def test_retry_run_of_a_cancelled_parent_discards_its_cancelled_child_step(store: Store) -> None:
    """A cancelled parent's failed Child step is deleted; the old child stays cancelled."""
    store.start_run(new("p"))
    start_child(store, "p", "k")
    store.change("p", None, "cancel", None, sec(1))
    store.retry_run("p", None, None, sec(2))
    assert step_ids(store, "p") == [] and store.get("k", None)[0].status == RunStatus.CANCELLED


def _parent_failed_while_its_child_runs(store: Store) -> Claimed:
    """Parent p times out (fails) while waiting for its live child k; returns k, claimed."""
    store.start_run(new("p", timeout_at=sec(10)))
    start_child(store, "p", "k")
    claimed = {c.run.id: c for c in store.claim("w1", [WF], sec(10), LEASE, 10)}
    timeout = RunError("WorkflowTimeoutError", "too late", None, "c")
    assert store.commit(claimed["p"].lease, sec(10), LEASE, Batch(outcome=FailRun(timeout))).ok
    return claimed["k"]


def test_retry_run_keeps_a_child_step_waiting_for_its_live_child(store: Store) -> None:
    """A Child step waiting for a live child is kept: that child's end settles it."""
    kid = _parent_failed_while_its_child_runs(store)
    store.retry_run("p", None, None, sec(11))
    assert [(s.step_id, s.status) for s in store.get("p", None)[1]] == [("c", "waiting")]
    assert store.commit(kid.lease, sec(12), LEASE, Batch(outcome=CompleteRun({"v": 7}))).ok
    step = store.get("p", None)[1][0]
    assert (step.status, step.output) == ("completed", {"v": 7})


def test_retry_run_from_a_waiting_child_step_cancels_its_live_child(store: Store) -> None:
    """from_step discarding a waiting Child step cancels its live child."""
    kid = _parent_failed_while_its_child_runs(store)
    store.retry_run("p", None, "c", sec(11))
    child = store.get("k", None)[0]
    assert child.status == RunStatus.CANCELLED and child.completed_at == sec(11)
    assert step_ids(store, "p") == [] and store.get("p", None)[0].status == RunStatus.PENDING
    assert not store.commit(kid.lease, sec(12), LEASE, Batch(outcome=CompleteRun(1))).ok


def test_an_older_child_ending_does_not_settle_a_newer_childs_step(store: Store) -> None:
    """An older child ending leaves a Child step that waits for a newer child alone."""
    store.start_run(new("p"))
    start_child(store, "p", "k1")
    store.change("p", None, "cancel", None, sec(1))
    store.retry_run("p", None, None, sec(2))
    start_child(store, "p", "k2", sec(2))
    store.retry_run("k1", None, None, sec(3))
    claimed = {c.run.id: c for c in store.claim("w1", [WF], sec(3), LEASE, 10)}
    assert store.commit(claimed["k1"].lease, sec(3), LEASE, Batch(outcome=CompleteRun("old"))).ok
    parent, steps = store.get("p", None)
    assert parent.status == RunStatus.PAUSED and (steps[0].status, steps[0].output) == (
        "waiting",
        {"child_run_id": "k2"},
    )
    assert store.commit(claimed["k2"].lease, sec(4), LEASE, Batch(outcome=CompleteRun("new"))).ok
    assert store.get("p", None)[1][0].output == "new" and store.get("p", None)[0].status == RunStatus.PENDING


@pytest.mark.postgres
def test_retry_run_wakes_workers_and_run_waiters(pg: PostgresStore) -> None:
    """The retry commits with a wake-up for workers and a status change for wait_for_run."""
    pg.listen()
    pg.start_run(new("r1"))
    fail_with(pg, "r1", ())
    while pg.wait_for_wakeup(0.1):  # the start's wake-up
        pass
    with pg.watch_run("r1") as waiter:
        pg.retry_run("r1", None, None, sec(1))
        assert waiter.wait(5) is True and pg.wait_for_wakeup(5) is True


@pytest.mark.postgres
def test_concurrent_retries_revive_a_run_once(pg: PostgresStore) -> None:
    """Of four concurrent retries of one failed run exactly one succeeds."""
    pg.start_run(new("r1"))
    fail_with(pg, "r1", (rec("a", seq=1), rec("c", "failed", seq=2, error=BOOM)))
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def retry() -> None:
        barrier.wait()
        try:
            pg.retry_run("r1", None, None, sec(1))
            outcomes.append("ok")
        except InvalidStateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"] and step_ids(pg, "r1") == ["a"]
