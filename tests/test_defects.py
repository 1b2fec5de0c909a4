"""SPEC §10: each known pg-workflows defect, shown absent on real PostgreSQL (one test per defect)."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs
import pendulum
import psycopg
import pytest
from psycopg import sql

import pgflow
from pgflow import Delay, Run, WaitFor, workflow
from pgflow.postgres.listen import channel
from pgflow.postgres.migrate import load_migrations
from pgflow.testing import SimClock
from procs.common import connect, eventually, execute, extra_schemas, stays, table

pytestmark = pytest.mark.postgres

CALLS: dict[str, int] = {}
SEEN: dict[str, list[Any]] = {}
_lock = threading.Lock()


def ident(value: Any) -> Any:
    return value


def counted(key: str) -> str:
    with _lock:
        CALLS[key] = CALLS.get(key, 0) + 1
    return key


def boom() -> None:
    raise ValueError("always fails")


# -- workflows -------------------------------------------------------------------------------------------


@workflow("early-return")
def early_return(ctx: pgflow.Context[Any]):
    x = yield Run("first", ident, ctx.input)
    if x > 0:
        return "early"
    yield Run("last", ident, 0)
    return "late"


@workflow("loop")
def loop(ctx: pgflow.Context[Any]):
    total = 0
    for i in range(3):
        total += yield Run(f"step-{i}", ident, i)
    return total


@workflow("branch")
def branch(ctx: pgflow.Context[Any]):
    if ctx.input == "a":
        value = yield Run("a", ident, "A")
    else:
        value = yield Run("b", ident, "B")
    return value


STEP_STARTED: dict[str, threading.Event] = {}


def slow_step(key: str) -> str:
    STEP_STARTED.setdefault(key, threading.Event()).set()
    time.sleep(0.4)
    return key


@workflow("late-wait")
def late_wait(ctx: pgflow.Context[Any]):
    yield Run("slow", slow_step, ctx.input)
    data = yield WaitFor("wait", event="early")
    return data


@workflow("waiter")
def waiter(ctx: pgflow.Context[Any]):
    data = yield WaitFor("wait", event="go")
    return data


@workflow("napper", timeout="600ms")
def napper(ctx: pgflow.Context[Any]):
    yield Delay("nap", "1h")
    return "woke"


@workflow("counted")
def counted_wf(ctx: pgflow.Context[Any]):
    value = yield Run("count", counted, ctx.input)
    return value


def probe(dsn: str, schema: str, run_id: str) -> dict[str, Any]:
    """From another connection: lock the run's row with NOWAIT; sample idle-in-transaction backends."""
    with psycopg.connect(dsn) as conn:  # a transaction of its own
        conn.execute(
            sql.SQL("SELECT id FROM {} WHERE id = %s FOR UPDATE NOWAIT").format(table(schema, "runs")),
            (run_id,),
        )
        conn.rollback()
    samples = []
    with connect(dsn) as conn:
        for _ in range(5):
            found = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            ).fetchone()
            samples.append(found[0] if found else -1)
            time.sleep(0.02)
    return {"locked": True, "idle_in_transaction": samples}


@workflow("probe")
def probe_wf(ctx: pgflow.Context[Any]):
    result = yield Run("probe", probe, ctx.input["dsn"], ctx.input["schema"], ctx.run_id)
    return result


def xmins(dsn: str, schema: str, run_id: str) -> dict[str, str]:
    rows = execute(
        dsn,
        sql.SQL("SELECT step_id, xmin::text FROM {} WHERE run_id = %s").format(table(schema, "steps")),
        (run_id,),
    )
    return dict(rows)  # type: ignore[arg-type]


@workflow("history")
def history(ctx: pgflow.Context[Any]):
    seen = []
    for i in range(6):
        snapshot = yield Run(f"s{i}", xmins, ctx.input["dsn"], ctx.input["schema"], ctx.run_id)
        seen.append(snapshot)
    return seen


@workflow("budget", retries=2, retry_backoff="100ms")
def budget(ctx: pgflow.Context[Any]):
    for attempt in range(ctx.attempt + 1):  # each attempt replays the earlier waits, then waits anew
        yield WaitFor(f"wait-{attempt}", event="go")
    yield Run("boom", boom)


@attrs.frozen
class Payload:
    amount: Decimal
    when: datetime
    tags: tuple[str, ...]


def make_payload() -> Payload:
    return Payload(Decimal("1.10"), pendulum.datetime(2024, 1, 1, 12, 30), ("a", "b"))


def make_raw():  # type: ignore[no-untyped-def]  (no annotation: plain JSON values)
    return {"pair": (1, 2), "half": 0.5, "when": "2024-01-01"}


@workflow("replay-equal")
def replay_equal(ctx: pgflow.Context[Any]):
    payload = yield Run("payload", make_payload)
    raw = yield Run("raw", make_raw)
    SEEN.setdefault(ctx.input, []).append(("before", ctx.is_replaying, payload, raw))
    yield Delay("nap", "200ms")  # suspends: the rest runs in a new claim, replaying the steps above
    SEEN[ctx.input].append(("after", ctx.is_replaying, payload, raw))
    return "ok"


ALL = (
    early_return,
    loop,
    branch,
    late_wait,
    waiter,
    napper,
    counted_wf,
    probe_wf,
    history,
    budget,
    replay_equal,
)


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
def engine(pg_dsn: str, pg_schema: str) -> Iterator[pgflow.Engine]:
    eng = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4).start()
    yield eng
    eng.stop()


@pytest.fixture
def producer(pg_dsn: str, pg_schema: str) -> Iterator[pgflow.Engine]:
    eng = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4).start(
        worker=False
    )
    yield eng
    eng.stop()


def _race(n: int, fn: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- the defects -------------------------------------------------------------------------------------------


def test_runs_complete_when_the_last_step_in_source_order_is_not_reached(engine: pgflow.Engine) -> None:
    """Defect: runs left running forever after an early return, a loop or an untaken branch."""
    runs = {
        "early": engine.start_workflow("early-return", 1),
        "late": engine.start_workflow("early-return", 0),
        "loop": engine.start_workflow("loop"),
        "branch-a": engine.start_workflow("branch", "a"),
        "branch-b": engine.start_workflow("branch", "b"),
    }
    outputs = {name: engine.wait_for_run(run.id, timeout="10s") for name, run in runs.items()}
    assert {name: (r.status.value, r.output) for name, r in outputs.items()} == {
        "early": ("completed", "early"),
        "late": ("completed", "late"),
        "loop": ("completed", 3),
        "branch-a": ("completed", "A"),
        "branch-b": ("completed", "B"),
    }
    assert list(outputs["early"].timeline) == ["first"]


def test_events_sent_before_the_wait_is_reached_are_not_lost(
    producer: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    """Defect: events lost when sent before the run reaches its WaitFor."""
    pending = producer.start_workflow("late-wait", uuid.uuid4().hex)
    producer.trigger_event(pending.id, "early", {"when": "while pending"})
    key = uuid.uuid4().hex
    running = producer.start_workflow("late-wait", key)
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4):
        assert eventually(lambda: STEP_STARTED.get(key) and STEP_STARTED[key].is_set(), timeout=10)
        producer.trigger_event(running.id, "early", {"when": "while running"})
        assert producer.wait_for_run(pending.id, timeout="10s").output == {"when": "while pending"}
        done = producer.wait_for_run(running.id, timeout="10s")
        assert done.output == {"when": "while running"}


def test_an_event_does_not_unpause_a_held_run(engine: pgflow.Engine) -> None:
    """Defect: any event un-pausing a run held by pause_workflow."""
    run = engine.start_workflow("waiter")
    engine.wait_for_run(run.id, until="paused", timeout="10s")
    engine.pause_workflow(run.id)
    engine.trigger_event(run.id, "other", {"n": 0})
    engine.trigger_event(run.id, "go", {"n": 1})
    stays(lambda: (r := engine.get_run(run.id)).status == "paused" and r.held and r.output is None, 0.6)
    engine.resume_workflow(run.id)
    assert engine.wait_for_run(run.id, timeout="10s").output == {"n": 1}


def test_workflow_timeouts_are_enforced(engine: pgflow.Engine) -> None:
    """Defect: workflow timeouts stored but never enforced (also while waiting or held)."""
    waiting = engine.start_workflow("napper")
    held = engine.start_workflow("napper")
    engine.wait_for_run(held.id, until="paused", timeout="10s")
    engine.pause_workflow(held.id)
    for run in (waiting, held):
        done = engine.wait_for_run(run.id, timeout="10s")
        assert done.status == "failed", done
        assert done.error is not None and done.error.type == "WorkflowTimeoutError"
        assert done.completed_at is not None and run.timeout_at is not None
        assert done.completed_at >= run.timeout_at


def test_the_start_is_enqueued_in_the_insert_transaction(
    engine: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    """Defect: the start job enqueued outside the run's insert transaction."""
    engine.get_runs()  # migrate
    runs = sql.Identifier(pg_schema, "runs")
    refuse = sql.Identifier(pg_schema, "refuse")
    execute(pg_dsn, sql.SQL(
        "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"
    ).format(refuse))  # fmt: skip
    # fires at COMMIT, after the insert and anything sent with it: the whole start must roll back
    execute(pg_dsn, sql.SQL(
        "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON {} DEFERRABLE INITIALLY DEFERRED "
        "FOR EACH ROW WHEN (NEW.input #>> '{{}}' LIKE 'refuse%') EXECUTE FUNCTION {}()"
    ).format(runs, refuse))  # fmt: skip
    with connect(pg_dsn) as listener:
        for kind in ("wake", "runs"):
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(kind, pg_schema))))
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            key = f"refuse-{uuid.uuid4().hex}"
            with pytest.raises(pgflow.StorageError):
                client.start_workflow("counted", key)
            assert list(listener.notifies(timeout=0.5)) == []  # nothing woke anyone
            assert client.get_runs().items == []
            time.sleep(0.3)
            assert key not in CALLS
            ok = client.start_workflow("counted", "accepted")
            notes = list(listener.notifies(timeout=1.0, stop_after=1))
            assert notes, "a committed start wakes the workers"
            assert client.wait_for_run(ok.id, timeout="10s").status == "completed"


def test_step_code_holds_no_row_lock_and_no_transaction(
    engine: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    """Defect: user step code running inside a transaction that holds a row lock and a connection."""
    run = engine.start_workflow("probe", {"dsn": pg_dsn, "schema": pg_schema})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed", done.error
    assert done.output["locked"] is True
    assert min(done.output["idle_in_transaction"]) == 0, done.output


def test_step_history_is_not_rewritten_on_every_step(
    engine: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    """Defect: the whole step history rewritten on every step (O(n²) bytes)."""
    run = engine.start_workflow("history", {"dsn": pg_dsn, "schema": pg_schema})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed", done.error
    final = xmins(pg_dsn, pg_schema, run.id)
    assert sorted(final) == [f"s{i}" for i in range(6)]  # one row per step
    snapshots: list[dict[str, str]] = done.output
    assert sum(len(s) for s in snapshots) > 0, "steps are recorded while the run goes on"
    for i, snapshot in enumerate(snapshots):
        assert f"s{i}" in snapshot, "a step's record exists (running) while its code runs"
        for step_id, xmin in snapshot.items():
            if step_id != f"s{i}":  # the running step's row is written once more, with its outcome
                assert final[step_id] == xmin, f"row of {step_id} was rewritten by a later step"


def test_status_changes_are_guarded(engine: pgflow.Engine, pg_dsn: str, pg_schema: str) -> None:
    """Defect: unguarded read-then-write status changes (concurrent cancels/pauses/resumes)."""
    clients = [pgflow.Client(pg_dsn, schema=pg_schema) for _ in range(6)]
    try:
        for c in clients:
            c.get_runs()
        run = clients[0].start_workflow("waiter")
        clients[0].wait_for_run(run.id, until="paused", timeout="10s")
        for action in ("pause_workflow", "resume_workflow", "cancel_workflow"):
            results = _race(6, lambda i, a=action: getattr(clients[i], a)(run.id))
            wins = [r for r in results if isinstance(r, pgflow.WorkflowRun)]
            losses = [r for r in results if isinstance(r, pgflow.InvalidStateError)]
            assert (len(wins), len(losses)) == (1, 5), (action, results)
        assert clients[0].get_run(run.id).status == "cancelled"
    finally:
        for c in clients:
            c.close()


def test_retry_budget_is_not_reset_by_events(engine: pgflow.Engine) -> None:
    """Defect: the retry budget reset by every event."""
    run = engine.start_workflow("budget")
    for attempt in range(3):
        current = eventually(
            lambda a=attempt: (
                (r := engine.get_run(run.id)).waiting is not None and r.waiting.step_id == f"wait-{a}" and r
            ),
            timeout=10,
        )
        assert current.retry_count == attempt
        engine.trigger_event(run.id, "noise")
        engine.trigger_event(run.id, "go")
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "failed" and done.retry_count == 2
    assert done.error is not None and done.error.type == "ValueError" and done.error.step_id == "boom"


def test_first_execution_and_replay_see_equal_values(engine: pgflow.Engine) -> None:
    """Defect: first execution and replay seeing different values."""
    key = uuid.uuid4().hex
    run = engine.start_workflow("replay-equal", key)
    assert engine.wait_for_run(run.id, timeout="10s").status == "completed"
    seen = SEEN[key]
    assert [(where, replaying) for where, replaying, _, _ in seen][:2] == [
        ("before", False),
        ("before", True),
    ]
    assert seen[-1][0] == "after"
    first = seen[0]
    for _, _, payload, raw in seen:
        assert payload == first[2] and raw == first[3]
        assert type(payload.when) is type(first[2].when)
        # dict iteration order is part of what the workflow sees: code like `next(iter(result))` must
        # pick the same key on replay as on the first execution
        assert list(raw) == list(first[3]), "dict key order differs between first execution and replay"
    payload, raw = first[2], first[3]
    assert isinstance(payload, Payload) and payload.tags == ("a", "b") and payload.amount == Decimal("1.10")
    assert isinstance(payload.when, datetime) and payload.when == pendulum.datetime(2024, 1, 1, 12, 30)
    assert raw == {"pair": [1, 2], "half": 0.5, "when": "2024-01-01"}  # JSON round trip, even the first time


def test_idempotency_keys_do_not_leak_another_tenants_run(producer: pgflow.Engine) -> None:
    """Defect: idempotency keys leaking another tenant's run."""
    theirs = producer.start_workflow("waiter", idempotency_key="invoice-1", resource_id="tenant-a")
    with pytest.raises(pgflow.IdempotencyConflictError) as info:
        producer.start_workflow("waiter", idempotency_key="invoice-1", resource_id="tenant-b")
    assert theirs.id not in str(info.value)
    with pytest.raises(pgflow.RunNotFoundError):
        producer.get_run(theirs.id, resource_id="tenant-b")
    assert producer.get_runs(resource_id="tenant-b").items == []


def test_pages_do_not_skip_rows_on_equal_timestamps(
    producer: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    """Defect: pages skipping (or repeating) rows when runs share a timestamp."""
    clock = SimClock("2024-05-05T05:05:05Z")
    with pgflow.Client(pg_dsn, schema=pg_schema, clock=clock) as c:
        original = {c.start_workflow("waiter").id for _ in range(25)}
        seen: list[str] = []
        page = c.get_runs(limit=7)
        seen += [r.id for r in page.items]
        for _ in range(5):  # more runs with the same timestamp arrive while paging
            c.start_workflow("waiter")
        while page.has_more:
            page = c.get_runs(limit=7, starting_after=page.next_cursor)
            seen += [r.id for r in page.items]
        assert len(seen) == len(set(seen)), "a run was repeated"
        assert original <= set(seen), "a run was skipped"


def test_no_polling_latency_between_start_and_completion(
    engine: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    """Defect: 0.5 s polling latency on every hop (start → worker → completion → waiter)."""
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        warm = client.start_workflow("counted", "warm-up")
        client.wait_for_run(warm.id, timeout="10s")
        timings = []
        for i in range(7):
            began = time.perf_counter()
            run = client.start_workflow("counted", f"latency-{uuid.uuid4().hex}-{i}")
            done = client.wait_for_run(run.id, timeout="10s")
            timings.append(time.perf_counter() - began)
            assert done.status == "completed"
    assert statistics.median(timings) < 0.1, timings


def test_migrations_do_not_race(pg_dsn: str) -> None:
    """Defect: migrations that race when several processes start at once."""
    with extra_schemas(pg_dsn) as schemas:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        schemas.append(schema)
        engines = [
            pgflow.Engine(pg_dsn, schema=schema, workflows=ALL, lease="2s", concurrency=1) for _ in range(10)
        ]
        try:
            results = _race(10, lambda i: engines[i].start(worker=False))
            assert all(isinstance(r, pgflow.Engine) for r in results), results
            versions = execute(pg_dsn, sql.SQL("SELECT version FROM {} ORDER BY version").format(
                table(schema, "schema_version")))  # fmt: skip
            assert [v for (v,) in versions] == [m.version for m in load_migrations()]
            run = engines[3].start_workflow("counted", "after-migrations")
            assert engines[7].get_run(run.id).status == "pending"
        finally:
            for e in engines:
                e.stop()
