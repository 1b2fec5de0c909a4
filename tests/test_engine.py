"""The Engine end to end on real PostgreSQL: lifecycle, registration, configuration, workers, and every
step kind executed by the background worker (SPEC §2–§5)."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import (
    All,
    Child,
    ChildFailedError,
    Delay,
    Retry,
    Run,
    Transaction,
    WaitFor,
    workflow,
)
from pgflow.testing import Harness
from procs.common import eventually, execute, extra_schemas, stays, table

pytestmark = pytest.mark.postgres

CALLS: collections.Counter[str] = collections.Counter()


# -- workflows -----------------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    return a + b


def double(x: int) -> int:
    return x * 2


@workflow("simple")
def simple(ctx: pgflow.Context[Any]):
    total = yield Run("add", add, ctx.input["a"], ctx.input["b"])
    doubled = yield Run("double", double, total)
    return {"sum": total, "double": doubled}


@workflow("other")
def other(ctx: pgflow.Context[Any]):
    value = yield Run("one", add, 1, 1)
    return value


def flaky(key: str, failures: int) -> int:
    CALLS[key] += 1
    if CALLS[key] <= failures:
        raise ValueError(f"flaky call {CALLS[key]}")
    return CALLS[key]


@workflow("flaky", retries=2, retry_backoff="200ms")
def flaky_wf(ctx: pgflow.Context[Any]):
    n = yield Run("flaky", flaky, ctx.input["key"], ctx.input["failures"])
    return n


@workflow("step-retry")
def step_retry_wf(ctx: pgflow.Context[Any]):
    n = yield Run("flaky", flaky, ctx.input["key"], 2, retry=Retry(max_attempts=3, initial="100ms", jitter=0))
    return n


@workflow("waits-forever", timeout="1s")
def waits_forever(ctx: pgflow.Context[Any]):
    data = yield WaitFor("never", event="never-sent")
    return data


@workflow("short-delay")
def short_delay(ctx: pgflow.Context[Any]):
    yield Delay("nap", "300ms")
    return "woke"


def insert_ledger(conn: psycopg.Connection[Any], schema: str, run_id: str, fail: bool) -> str:
    conn.execute(sql.SQL("INSERT INTO {} (run_id) VALUES (%s)").format(table(schema, "ledger")), (run_id,))
    if fail:
        raise RuntimeError("fails after writing")
    return "inserted"


@workflow("tx")
def tx_wf(ctx: pgflow.Context[Any]):
    result = yield Transaction("tx", insert_ledger, ctx.input["schema"], ctx.run_id, ctx.input["fail"])
    after = yield Run("after", add, 1, 2)
    return {"tx": result, "after": after}


def slow_echo(x: int) -> int:
    time.sleep(0.3)
    return x


@workflow("fanout")
def fanout(ctx: pgflow.Context[Any]):
    results = yield All(Run("a", slow_echo, 1), Run("b", slow_echo, 2), Run("c", slow_echo, 3))
    return results


def compute(x: int, fail: bool) -> int:
    if fail:
        raise ValueError(f"child cannot compute {x}")
    return x * 10


@workflow("kid")
def kid(ctx: pgflow.Context[Any]):
    value = yield Run("compute", compute, ctx.input["x"], ctx.input["fail"])
    return {"value": value}


@workflow("parent")
def parent(ctx: pgflow.Context[Any]):
    try:
        out = yield Child("kid", kid, {"x": ctx.input["x"], "fail": ctx.input["fail"]})
    except ChildFailedError as exc:
        return {"caught": type(exc).__name__, "message": str(exc)}
    return {"child": out}


@workflow("waiting-kid")
def waiting_kid(ctx: pgflow.Context[Any]):
    data = yield WaitFor("wait", event="go")
    return data


@workflow("waiting-parent")
def waiting_parent(ctx: pgflow.Context[Any]):
    out = yield Child("kid", waiting_kid)
    return out


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def make_engine(pg_dsn: str, pg_schema: str) -> Iterator[Any]:
    engines: list[pgflow.Engine] = []

    def make(*workflows: pgflow.Workflow, **kwargs: Any) -> pgflow.Engine:
        kwargs.setdefault("schema", pg_schema)
        kwargs.setdefault("lease", "2s")
        kwargs.setdefault("concurrency", 4)
        if "pool" not in kwargs:
            kwargs.setdefault("dsn", pg_dsn)
        engine = pgflow.Engine(workflows=workflows, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


def _schema_exists(dsn: str, schema: str) -> bool:
    return bool(execute(dsn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)))


# -- lifecycle -----------------------------------------------------------------------------------------------


def test_start_to_complete_through_the_background_worker(make_engine: Any) -> None:
    engine = make_engine(simple).start()
    run = engine.start_workflow("simple", {"a": 2, "b": 3})
    assert run.status == pgflow.RunStatus.PENDING
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == pgflow.RunStatus.COMPLETED
    assert done.output == {"sum": 5, "double": 10}
    assert list(done.timeline) == ["add", "double"]
    assert all(s.status == "completed" and s.attempts == 1 for s in done.timeline.values())
    assert done.error is None and done.completed_at is not None


def test_context_manager_starts_and_stops(make_engine: Any, pg_dsn: str, pg_schema: str) -> None:
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[simple], lease="2s", concurrency=4) as engine:
        assert isinstance(engine, pgflow.Engine)
        run = engine.start_workflow(simple, {"a": 1, "b": 1})
        assert engine.wait_for_run(run.id, timeout="10s").output == {"sum": 2, "double": 4}


def test_producer_only_engine_leaves_runs_pending_until_started(make_engine: Any) -> None:
    engine = make_engine(simple).start(worker=False)
    run = engine.start_workflow("simple", {"a": 1, "b": 2})
    stays(lambda: engine.get_run(run.id).status == "pending", 0.6)
    engine.start()
    assert engine.wait_for_run(run.id, timeout="10s").output == {"sum": 3, "double": 6}


def test_client_methods_before_start_migrate_lazily_without_workers(
    make_engine: Any, pg_dsn: str, pg_schema: str
) -> None:
    engine = make_engine(simple)
    assert not _schema_exists(pg_dsn, pg_schema)
    page = engine.get_runs()
    assert page.items == [] and _schema_exists(pg_dsn, pg_schema)
    run = engine.start_workflow("simple", {"a": 4, "b": 4})  # registered lazily too
    stays(lambda: engine.get_run(run.id).status == "pending", 0.6)
    engine.start()
    assert engine.wait_for_run(run.id, timeout="10s").output == {"sum": 8, "double": 16}


def test_stop_then_restart_an_engine_object(make_engine: Any) -> None:
    engine = make_engine(simple).start()
    first = engine.start_workflow("simple", {"a": 1, "b": 1})
    engine.wait_for_run(first.id, timeout="10s")
    engine.stop()
    engine.start()
    second = engine.start_workflow("simple", {"a": 2, "b": 2})
    assert engine.wait_for_run(second.id, timeout="10s").status == "completed"


# -- registration and configuration ------------------------------------------------------------------------


def test_register_same_object_is_noop_and_different_definition_conflicts(make_engine: Any) -> None:
    engine = make_engine(simple)
    engine.register(simple)
    engine.start(worker=False)
    engine.register(simple)  # after start too

    @workflow("simple")
    def impostor(ctx: pgflow.Context[Any]):
        yield Run("x", add, 1, 1)

    with pytest.raises(pgflow.WorkflowDefinitionError, match="simple"):
        engine.register(impostor)
    assert engine.workflows["simple"] is simple


def test_register_after_start_serves_the_new_workflow(make_engine: Any) -> None:
    engine = make_engine(simple).start()
    engine.register(other)
    assert set(engine.workflows) == {"simple", "other"}
    run = engine.start_workflow("other")
    assert engine.wait_for_run(run.id, timeout="10s").output == 2


def test_workflows_is_a_read_only_mapping(make_engine: Any) -> None:
    engine = make_engine(simple, other)
    wfs = engine.workflows
    assert dict(wfs) == {"simple": simple, "other": other}
    with pytest.raises(TypeError):
        wfs["x"] = simple  # type: ignore[index]
    with pytest.raises(TypeError):
        del wfs["simple"]  # type: ignore[attr-defined]


def test_dsn_and_pool_together_is_a_configuration_error(pg_dsn: str, pg_schema: str) -> None:
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as pool:
        with pytest.raises(pgflow.ConfigurationError):
            pgflow.Engine(pg_dsn, pool=pool, schema=pg_schema)
        with pytest.raises(pgflow.ConfigurationError):
            pgflow.Client(pg_dsn, pool=pool, schema=pg_schema)


def test_caller_owned_pool_is_never_closed(make_engine: Any, pg_dsn: str) -> None:
    with ConnectionPool(pg_dsn, min_size=1, max_size=10, open=True) as pool:
        engine = make_engine(simple, pool=pool).start()
        run = engine.start_workflow("simple", {"a": 5, "b": 5})
        assert engine.wait_for_run(run.id, timeout="10s").output == {"sum": 10, "double": 20}
        engine.stop()
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 42").fetchone() == (42,)
        client = pgflow.Client(pool=pool, schema=engine.schema)
        assert client.get_run(run.id).status == "completed"
        client.close()
        assert not pool.closed


def test_engines_in_different_schemas_do_not_see_each_other(make_engine: Any, pg_dsn: str) -> None:
    with extra_schemas(pg_dsn) as schemas:
        other_schema = f"t_{uuid.uuid4().hex[:12]}"
        schemas.append(other_schema)
        a = make_engine(simple).start()
        b = make_engine(simple, schema=other_schema).start()
        run_a = a.start_workflow("simple", {"a": 1, "b": 2})
        run_b = b.start_workflow("simple", {"a": 3, "b": 4})
        assert a.wait_for_run(run_a.id, timeout="10s").output["sum"] == 3
        assert b.wait_for_run(run_b.id, timeout="10s").output["sum"] == 7
        with pytest.raises(pgflow.RunNotFoundError):
            b.get_run(run_a.id)
        with pytest.raises(pgflow.RunNotFoundError):
            a.get_run(run_b.id)
        assert [r.id for r in a.get_runs().items] == [run_a.id]
        assert [r.id for r in b.get_runs().items] == [run_b.id]


def test_engine_validation_of_concurrency_and_schema(pg_dsn: str) -> None:
    """A concurrency below 1 or a schema name that is not an identifier is an InvalidArgumentError
    naming the option; a dsn that is not a string is a ConfigurationError."""
    with pytest.raises(pgflow.InvalidArgumentError, match="concurrency"):
        pgflow.Engine(pg_dsn, concurrency=0)
    with pytest.raises(pgflow.InvalidArgumentError, match="schema"):
        pgflow.Engine(pg_dsn, schema="bad-schema; drop")
    with pytest.raises(pgflow.ConfigurationError, match="dsn"):
        pgflow.Engine(pg_dsn.encode())  # type: ignore[arg-type]


# -- retries and timeouts -----------------------------------------------------------------------------------


def test_run_retries_with_backoff_then_completes(make_engine: Any) -> None:
    engine = make_engine(flaky_wf).start()
    key = uuid.uuid4().hex
    began = time.monotonic()
    run = engine.start_workflow("flaky", {"key": key, "failures": 2})
    done = engine.wait_for_run(run.id, timeout="15s")
    elapsed = time.monotonic() - began
    assert done.status == "completed" and done.output == 3
    assert done.retry_count == 2 and done.max_retries == 2
    assert done.error is None
    assert CALLS[key] == 3
    assert elapsed >= 0.2 + 0.4 - 0.05  # backoff 200 ms × 2^(n−1): 0.2 s, then 0.4 s


def test_run_out_of_attempts_fails_with_the_original_error(make_engine: Any) -> None:
    engine = make_engine(flaky_wf).start()
    key = uuid.uuid4().hex
    run = engine.start_workflow("flaky", {"key": key, "failures": 99})
    done = engine.wait_for_run(run.id, timeout="15s")
    assert done.status == "failed"
    assert done.retry_count == 2
    assert done.error is not None
    assert done.error.type == "ValueError"
    assert done.error.message == "flaky call 3"
    assert done.error.step_id == "flaky"
    assert CALLS[key] == 3


def test_retries_override_at_start(make_engine: Any) -> None:
    engine = make_engine(flaky_wf).start()
    key = uuid.uuid4().hex
    run = engine.start_workflow("flaky", {"key": key, "failures": 99}, retries=0)
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "failed" and done.retry_count == 0 and CALLS[key] == 1


def test_step_retry_policy_records_attempts(make_engine: Any) -> None:
    engine = make_engine(step_retry_wf).start()
    key = uuid.uuid4().hex
    run = engine.start_workflow("step-retry", {"key": key})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed" and done.output == 3
    assert done.timeline["flaky"].attempts == 3
    assert done.retry_count == 0


def test_workflow_timeout_is_enforced_while_waiting(make_engine: Any) -> None:
    engine = make_engine(waits_forever).start()
    began = time.monotonic()
    run = engine.start_workflow("waits-forever")
    assert run.timeout_at is not None
    paused = engine.wait_for_run(run.id, until=["paused"], timeout="10s")
    assert paused.waiting is not None and paused.waiting.event == "never-sent"
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "failed"
    assert done.error is not None and done.error.type == "WorkflowTimeoutError"
    assert 0.9 <= time.monotonic() - began < 5


def test_timeout_override_at_start(make_engine: Any) -> None:
    engine = make_engine(waits_forever).start()
    run = engine.start_workflow("waits-forever", timeout="300ms")
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "failed" and done.error is not None
    assert done.error.type == "WorkflowTimeoutError"


def test_delay_fires_on_its_own(make_engine: Any) -> None:
    engine = make_engine(short_delay).start()
    run = engine.start_workflow("short-delay")
    paused = engine.wait_for_run(run.id, until="paused", timeout="10s")
    assert paused.waiting is not None and paused.waiting.kind == "delay"
    assert paused.wake_at is not None
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.output == "woke"
    assert done.completed_at is not None and done.completed_at >= paused.wake_at


# -- Transaction steps ------------------------------------------------------------------------------------


def _ledger(dsn: str, schema: str) -> None:
    execute(dsn, sql.SQL("CREATE TABLE {} (run_id text NOT NULL)").format(table(schema, "ledger")))


def _ledger_rows(dsn: str, schema: str) -> list[str]:
    return [r[0] for r in execute(dsn, sql.SQL("SELECT run_id FROM {}").format(table(schema, "ledger")))]


def test_transaction_step_writes_commit_with_the_checkpoint(
    make_engine: Any, pg_dsn: str, pg_schema: str
) -> None:
    engine = make_engine(tx_wf).start()
    engine.get_runs()  # migrate (creates the schema)
    _ledger(pg_dsn, pg_schema)
    run = engine.start_workflow("tx", {"schema": pg_schema, "fail": False})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed" and done.output == {"tx": "inserted", "after": 3}
    assert done.timeline["tx"].kind == "transaction"
    assert _ledger_rows(pg_dsn, pg_schema) == [run.id]


def test_transaction_step_failure_rolls_back_its_writes(
    make_engine: Any, pg_dsn: str, pg_schema: str
) -> None:
    engine = make_engine(tx_wf).start()
    engine.get_runs()
    _ledger(pg_dsn, pg_schema)
    run = engine.start_workflow("tx", {"schema": pg_schema, "fail": True})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "failed"
    assert done.error is not None and done.error.type == "RuntimeError" and done.error.step_id == "tx"
    assert done.timeline["tx"].status == "failed"
    assert _ledger_rows(pg_dsn, pg_schema) == []


def test_transaction_step_crash_before_commit_leaves_nothing_then_runs_once(
    pg_dsn: str, pg_schema: str
) -> None:
    with Harness([tx_wf], dsn=pg_dsn, schema=pg_schema) as h:
        _ledger(pg_dsn, pg_schema)
        h.crash_before("tx")
        run = h.start_workflow("tx", {"schema": pg_schema, "fail": False})
        h.run_until_idle()
        assert _ledger_rows(pg_dsn, pg_schema) == []
        assert h.get_run(run.id).status == "running"  # leased by the "killed" worker
        done = h.run_until_complete(run.id)
        assert done.status == "completed"
        assert _ledger_rows(pg_dsn, pg_schema) == [run.id]


@attrs.frozen
class Balance:
    account: str
    cents: int


def read_balance(conn: Any, account: str) -> Balance:
    cents = conn.execute("SELECT 1234").fetchone()[0]
    return Balance(account, cents)


@workflow("tx-typed")
def tx_typed(ctx: pgflow.Context[Any]):
    balance = yield pgflow.Transaction("read", read_balance, "acc-1")
    assert isinstance(balance, Balance)  # structured back through the return annotation
    return {"account": balance.account, "cents": balance.cents}


def test_transaction_result_round_trips_through_its_return_annotation(pg_dsn: str, pg_schema: str) -> None:
    """A Transaction step's result comes back as its annotated type, on first execution and replay."""
    with Harness([tx_typed], dsn=pg_dsn, schema=pg_schema) as h:
        h.crash_after("read")  # the recovery replays the recorded result
        run = h.start_workflow("tx-typed")
        done = h.run_until_complete(run.id)
    assert done.status == "completed" and done.output == {"account": "acc-1", "cents": 1234}


def test_transaction_step_crash_after_commit_is_not_repeated(pg_dsn: str, pg_schema: str) -> None:
    with Harness([tx_wf], dsn=pg_dsn, schema=pg_schema) as h:
        _ledger(pg_dsn, pg_schema)
        h.crash_after("tx")
        run = h.start_workflow("tx", {"schema": pg_schema, "fail": False})
        h.run_until_idle()
        assert _ledger_rows(pg_dsn, pg_schema) == [run.id]
        assert h.run_until_complete(run.id).status == "completed"
        assert _ledger_rows(pg_dsn, pg_schema) == [run.id]


# -- All and Child ---------------------------------------------------------------------------------------


def test_all_runs_steps_in_parallel_and_yields_results_in_order(make_engine: Any) -> None:
    engine = make_engine(fanout).start()
    began = time.monotonic()
    run = engine.start_workflow("fanout")
    done = engine.wait_for_run(run.id, timeout="10s")
    elapsed = time.monotonic() - began
    assert done.status == "completed" and done.output == [1, 2, 3]
    assert set(done.timeline) == {"a", "b", "c"}
    assert all(s.status == "completed" for s in done.timeline.values())
    assert elapsed < 0.8, f"three 0.3 s steps took {elapsed:.2f}s: not run in parallel"


def test_child_workflow_output_is_returned(make_engine: Any) -> None:
    engine = make_engine(parent, kid).start()
    run = engine.start_workflow("parent", {"x": 4, "fail": False})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed"
    assert done.output == {"child": {"value": 40}}
    children = engine.get_runs(workflow_id="kid").items
    assert len(children) == 1 and children[0].status == "completed"
    assert children[0].parent_run_id == run.id


def test_failed_child_raises_child_failed_error_in_parent(make_engine: Any) -> None:
    engine = make_engine(parent, kid).start()
    run = engine.start_workflow("parent", {"x": 4, "fail": True})
    done = engine.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed", done.error
    assert done.output["caught"] == "ChildFailedError"
    assert "child cannot compute 4" in done.output["message"]
    (child,) = engine.get_runs(workflow_id="kid").items
    assert child.status == "failed" and child.error is not None and child.error.type == "ValueError"


def test_cancelling_the_parent_cancels_the_child(make_engine: Any) -> None:
    engine = make_engine(waiting_parent, waiting_kid).start()
    run = engine.start_workflow("waiting-parent")
    engine.wait_for_run(run.id, until="paused", timeout="10s")
    child = eventually(lambda: engine.get_runs(workflow_id="waiting-kid").items)[0]
    engine.wait_for_run(child.id, until="paused", timeout="10s")
    cancelled = engine.cancel_workflow(run.id)
    assert cancelled.status == "cancelled"
    assert engine.get_run(child.id).status == "cancelled"


def test_child_completion_wakes_the_parent(make_engine: Any) -> None:
    engine = make_engine(waiting_parent, waiting_kid).start()
    run = engine.start_workflow("waiting-parent")
    engine.wait_for_run(run.id, until="paused", timeout="10s")
    child = eventually(lambda: engine.get_runs(workflow_id="waiting-kid").items)[0]
    engine.wait_for_run(child.id, until="paused", timeout="10s")
    engine.trigger_event(child.id, "go", {"from": "test"})
    assert engine.wait_for_run(run.id, timeout="10s").output == {"from": "test"}


# -- rolling deploys ----------------------------------------------------------------------------------------


def test_run_of_unknown_workflow_waits_for_an_engine_that_registers_it(
    make_engine: Any, pg_dsn: str, pg_schema: str
) -> None:
    old = make_engine(simple).start()
    late_ref = pgflow.ref("late")
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        run = client.start_workflow(late_ref, {"n": 7})
        assert run.status == "pending"
        stays(lambda: client.get_run(run.id).status == "pending", 1.2)  # the old worker never claims it

        @late_ref.implement()
        def late(ctx: pgflow.Context[Any]):
            value = yield Run("double", double, ctx.input["n"])
            return value

        make_engine(late).start()
        assert client.wait_for_run(run.id, timeout="10s").output == 14
    assert old.get_run(run.id).status == "completed"


def test_concurrent_workers_execute_each_run_once(make_engine: Any) -> None:
    key = uuid.uuid4().hex
    lock = threading.Lock()

    def count(i: int) -> int:
        with lock:
            CALLS[f"{key}:{i}"] += 1
        return i

    @workflow("counted")
    def counted(ctx: pgflow.Context[Any]):
        value = yield Run("count", count, ctx.input)
        return value

    engines = [make_engine(counted).start() for _ in range(3)]
    runs = [engines[i % 3].start_workflow("counted", i) for i in range(30)]
    for run in runs:
        assert engines[0].wait_for_run(run.id, timeout="15s").status == "completed"
    assert all(CALLS[f"{key}:{i}"] == 1 for i in range(30))
