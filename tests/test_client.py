"""Client, AsyncClient and the client methods of Engine on real PostgreSQL: SPEC §4 rules and §8 paging."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import pgflow
from pgflow import Delay, Pause, Poll, Run, WaitFor, workflow
from pgflow.testing import SimClock
from procs.common import execute, stays, table

pytestmark = pytest.mark.postgres

LONG = "x" * 257


def echo(value: Any) -> Any:
    return value


def never() -> None:
    return None


@workflow("echo")
def echo_wf(ctx: pgflow.Context[Any]):
    value = yield Run("echo", echo, ctx.input)
    return value


@workflow("other")
def other_wf(ctx: pgflow.Context[Any]):
    value = yield Run("echo", echo, ctx.input)
    return value


@workflow("waiter")
def waiter(ctx: pgflow.Context[Any]):
    first = yield Run("first", echo, 1)
    data = yield WaitFor("wait", event="go")
    return {"first": first, "data": data}


@workflow("delayer")
def delayer(ctx: pgflow.Context[Any]):
    yield Delay("nap", "1h")
    return "woke"


@workflow("poller")
def poller(ctx: pgflow.Context[Any]):
    result = yield Poll("poll", never, interval="1h")
    return {"timed_out": result.timed_out, "data": result.data}


@workflow("pauser")
def pauser(ctx: pgflow.Context[Any]):
    yield Pause("hold")
    return "resumed"


@attrs.frozen
class Signup:
    email: str
    plan: str = "free"


signup_ref = pgflow.ref("signup", input=Signup)


@signup_ref.implement(retries=1)
def signup(ctx: pgflow.Context[Signup]):
    user = yield Run("create", echo, {"email": ctx.input.email, "plan": ctx.input.plan})
    return user


ALL = (echo_wf, other_wf, waiter, delayer, poller, pauser, signup)


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def engine(pg_dsn: str, pg_schema: str) -> Iterator[pgflow.Engine]:
    """A started engine (background workers) serving every workflow of this module."""
    eng = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4)
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture
def producer(pg_dsn: str, pg_schema: str) -> Iterator[pgflow.Engine]:
    """An engine without workers (registers the workflows; runs stay pending)."""
    eng = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4)
    eng.start(worker=False)
    yield eng
    eng.stop()


@pytest.fixture
def client(pg_dsn: str, pg_schema: str) -> Iterator[pgflow.Client]:
    with pgflow.Client(pg_dsn, schema=pg_schema) as c:
        yield c


def _run_count(dsn: str, schema: str) -> int:
    return execute(dsn, pgflow_sql("SELECT count(*) FROM {}", schema, "runs"))[0][0]


def pgflow_sql(template: str, schema: str, name: str) -> Any:
    from psycopg import sql

    return sql.SQL(template).format(table(schema, name))


# -- knowing workflows --------------------------------------------------------------------------------------


def test_client_knows_workflows_any_engine_registered(producer: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("echo", {"hello": "world"})
    assert run.status == "pending" and run.workflow_id == "echo" and run.input == {"hello": "world"}
    with pytest.raises(pgflow.UnknownWorkflowError, match="nope"):
        client.start_workflow("nope")


def test_client_start_by_id_applies_the_registered_definition_defaults(pg_dsn: str, pg_schema: str) -> None:
    """A run started by id from a Client gets the definition's retries, timeout and backoff."""

    @workflow("strict-defaults", retries=2, timeout="1h", retry_backoff="3s")
    def strict(ctx: pgflow.Context[Any]):
        yield Run("echo", echo, 1)

    registrar = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[strict])
    registrar.start(worker=False)
    registrar.stop()
    with pgflow.Client(pg_dsn, schema=pg_schema) as c:
        run = c.start_workflow("strict-defaults")
        by_ref = c.start_workflow(pgflow.ref("strict-defaults"), retries=0)
    assert run.max_retries == 2
    assert run.timeout_at == run.created_at.add(hours=1)
    assert by_ref.max_retries == 0 and by_ref.timeout_at == by_ref.created_at.add(hours=1)


def test_client_on_a_fresh_schema_migrates_lazily(client: pgflow.Client, pg_dsn: str, pg_schema: str) -> None:
    assert client.get_runs().items == []
    assert execute(pg_dsn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (pg_schema,))
    with pytest.raises(pgflow.UnknownWorkflowError):
        client.start_workflow("echo")


def test_workflow_ref_started_by_a_client_runs_on_an_engine_implementing_it(
    engine: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    with pgflow.Client(pg_dsn, schema=pg_schema) as c:
        run = c.start_workflow(pgflow.ref("signup", input=Signup), Signup("a@b.c", "pro"))
        assert run.input == {"email": "a@b.c", "plan": "pro"}
        done = c.wait_for_run(run.id, timeout="10s")
        assert done.output == {"email": "a@b.c", "plan": "pro"}
        # by id, the client validates with nothing (the engine's definition is not in this process)
        again = c.start_workflow("signup", {"email": "x@y.z"})
        assert c.wait_for_run(again.id, timeout="10s").output == {"email": "x@y.z", "plan": "free"}


def test_invalid_input_via_ref_stores_nothing(client: pgflow.Client, pg_dsn: str, pg_schema: str) -> None:
    client.get_runs()
    with pytest.raises(pgflow.InvalidInputError) as info:
        client.start_workflow(signup_ref, {"email": 123})
    assert any("email" in e for e in info.value.errors)
    assert _run_count(pg_dsn, pg_schema) == 0


def test_check_progress_from_a_client_uses_stored_step_lists(
    engine: pgflow.Engine, client: pgflow.Client
) -> None:
    run = client.start_workflow("waiter")
    assert client.check_progress(run.id).completion_percentage == 0.0
    client.wait_for_run(run.id, until="paused", timeout="10s")
    progress = client.check_progress(run.id)
    assert (progress.completed_steps, progress.total_steps, progress.completion_percentage) == (1, 2, 50.0)
    client.trigger_event(run.id, "go")
    client.wait_for_run(run.id, timeout="10s")
    assert client.check_progress(run.id).completion_percentage == 100.0


# -- idempotency -----------------------------------------------------------------------------------------


def test_idempotency_key_under_concurrent_starts_gives_one_run(
    producer: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    barrier = threading.Barrier(10)
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            with pgflow.Client(pg_dsn, schema=pg_schema) as c:
                c.get_runs()  # connect first, so the starts really race
                barrier.wait()
                run = c.start_workflow("echo", {"n": 1}, idempotency_key="order-42")
            with lock:
                ids.append(run.id)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == 10 and len(set(ids)) == 1
    assert _run_count(pg_dsn, pg_schema) == 1
    run = producer.get_run(ids[0])
    assert run.idempotency_key == "order-42"


def test_idempotent_start_returns_the_existing_run(engine: pgflow.Engine, client: pgflow.Client) -> None:
    first = client.start_workflow("echo", {"n": 1}, idempotency_key="k1", resource_id="tenant-a")
    client.wait_for_run(first.id, timeout="10s")
    again = client.start_workflow("echo", {"n": 2}, idempotency_key="k1", resource_id="tenant-a")
    assert again.id == first.id
    assert again.status == "completed" and again.input == {"n": 1}


def test_idempotency_conflict_does_not_reveal_the_other_run(
    producer: pgflow.Engine, client: pgflow.Client
) -> None:
    first = client.start_workflow("echo", {"n": 1}, idempotency_key="shared", resource_id="tenant-a")
    with pytest.raises(pgflow.IdempotencyConflictError) as other_tenant:
        client.start_workflow("echo", {"n": 1}, idempotency_key="shared", resource_id="tenant-b")
    assert first.id not in str(other_tenant.value)
    with pytest.raises(pgflow.IdempotencyConflictError) as no_tenant:
        client.start_workflow("echo", {"n": 1}, idempotency_key="shared")
    assert first.id not in str(no_tenant.value)
    with pytest.raises(pgflow.IdempotencyConflictError) as other_workflow:
        client.start_workflow("other", {"n": 1}, idempotency_key="shared", resource_id="tenant-a")
    assert first.id not in str(other_workflow.value)
    assert [r.id for r in client.get_runs().items] == [first.id]


# -- resource scoping and argument limits -------------------------------------------------------------------


def test_resource_scoping_reports_foreign_runs_as_not_found(
    producer: pgflow.Engine, client: pgflow.Client
) -> None:
    mine = client.start_workflow("echo", {"n": 1}, resource_id="tenant-a")
    unowned = client.start_workflow("echo", {"n": 2})
    missing = str(uuid.uuid4())

    calls = [
        lambda rid, res: client.get_run(rid, resource_id=res),
        lambda rid, res: client.check_progress(rid, resource_id=res),
        lambda rid, res: client.trigger_event(rid, "go", resource_id=res),
        lambda rid, res: client.pause_workflow(rid, resource_id=res),
        lambda rid, res: client.resume_workflow(rid, resource_id=res),
        lambda rid, res: client.cancel_workflow(rid, resource_id=res),
        lambda rid, res: client.fast_forward_workflow(rid, resource_id=res),
        lambda rid, res: client.wait_for_run(rid, resource_id=res, timeout="1s"),
    ]
    for call in calls:
        for rid in (mine.id, unowned.id, missing):
            with pytest.raises(pgflow.RunNotFoundError) as info:
                call(rid, "tenant-b")
            # the same message as for a run that does not exist at all
            with pytest.raises(pgflow.RunNotFoundError) as absent:
                call(missing, "tenant-b")
            assert str(info.value).replace(rid, "ID") == str(absent.value).replace(missing, "ID")
    assert client.get_run(mine.id, resource_id="tenant-a").id == mine.id
    assert client.get_run(mine.id).resource_id == "tenant-a"
    assert [r.id for r in client.get_runs(resource_id="tenant-a").items] == [mine.id]
    assert client.get_runs(resource_id="tenant-b").items == []
    assert client.get_run(mine.id).status == "pending"  # nothing above touched it


def test_unknown_run_is_not_found(client: pgflow.Client) -> None:
    missing = str(uuid.uuid4())
    for call in (
        lambda: client.get_run(missing),
        lambda: client.trigger_event(missing, "go"),
        lambda: client.cancel_workflow(missing),
        lambda: client.pause_workflow(missing),
        lambda: client.check_progress(missing),
    ):
        with pytest.raises(pgflow.RunNotFoundError, match=missing):
            call()


def test_over_long_strings_raise_invalid_argument_naming_it(
    producer: pgflow.Engine, client: pgflow.Client
) -> None:
    run = client.start_workflow("echo")
    cases = {
        "workflow": lambda: client.start_workflow(LONG),
        "resource_id": lambda: client.start_workflow("echo", resource_id=LONG),
        "idempotency_key": lambda: client.start_workflow("echo", idempotency_key=LONG),
        "event": lambda: client.trigger_event(run.id, LONG),
    }
    for method in ("get_run", "check_progress", "trigger_event", "pause_workflow", "resume_workflow",
                   "cancel_workflow", "fast_forward_workflow", "wait_for_run"):  # fmt: skip
        args = (run.id, "go") if method == "trigger_event" else (run.id,)
        cases[f"resource_id ({method})"] = lambda m=method, a=args: getattr(client, m)(*a, resource_id=LONG)
    cases["resource_id (get_runs)"] = lambda: client.get_runs(resource_id=LONG)
    cases["workflow_id (get_runs)"] = lambda: client.get_runs(workflow_id=LONG)
    cases["resource_id (engine)"] = lambda: producer.get_run(run.id, resource_id=LONG)
    for name, call in cases.items():
        with pytest.raises(pgflow.InvalidArgumentError) as info:
            call()
        assert name.split(" ")[0] in str(info.value), (name, str(info.value))
    ok = client.start_workflow("echo", resource_id="r" * 256, idempotency_key="k" * 256)
    assert ok.resource_id == "r" * 256
    assert client.get_run(run.id).status == "pending"


# -- events, pause, resume, cancel, fast-forward -------------------------------------------------------------


def test_trigger_event_delivers_data_to_the_wait(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("waiter")
    waiting = client.wait_for_run(run.id, until="paused", timeout="10s")
    assert waiting.waiting is not None
    assert (waiting.waiting.kind, waiting.waiting.event, waiting.waiting.step_id) == (
        "wait_for",
        "go",
        "wait",
    )
    assert waiting.wake_at is None
    client.trigger_event(run.id, "go", {"answer": 42})
    done = client.wait_for_run(run.id, timeout="10s")
    assert done.output == {"first": 1, "data": {"answer": 42}}
    assert done.timeline["wait"].output == {"answer": 42}


def test_trigger_event_without_data_delivers_empty_dict(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("waiter")
    client.wait_for_run(run.id, until="paused", timeout="10s")
    client.trigger_event(run.id, "go")
    assert client.wait_for_run(run.id, timeout="10s").output["data"] == {}


def test_trigger_event_on_a_terminal_run_is_refused_and_not_stored(
    engine: pgflow.Engine, client: pgflow.Client, pg_dsn: str, pg_schema: str
) -> None:
    run = client.start_workflow("echo", 1)
    client.wait_for_run(run.id, timeout="10s")
    with pytest.raises(pgflow.InvalidStateError, match=run.id):
        client.trigger_event(run.id, "go", {"late": True})
    assert execute(pg_dsn, pgflow_sql("SELECT count(*) FROM {}", pg_schema, "events"))[0][0] == 0


def test_event_to_a_held_run_is_kept_until_resumed(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("waiter")
    client.wait_for_run(run.id, until="paused", timeout="10s")
    held = client.pause_workflow(run.id)
    assert held.held and held.status == "paused" and held.paused_at is not None
    client.trigger_event(run.id, "go", {"kept": True})
    stays(lambda: client.get_run(run.id).status == "paused", 0.5)
    resumed = client.resume_workflow(run.id)
    assert not resumed.held and resumed.resumed_at is not None
    assert client.wait_for_run(run.id, timeout="10s").output["data"] == {"kept": True}


def test_pause_rules(producer: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("echo", 1)
    held = client.pause_workflow(run.id)  # from pending
    assert held.status == "paused" and held.held
    with pytest.raises(pgflow.InvalidStateError):
        client.pause_workflow(run.id)  # already held
    client.cancel_workflow(run.id)
    with pytest.raises(pgflow.InvalidStateError):
        client.pause_workflow(run.id)  # terminal


def test_paused_pending_run_is_not_executed_until_resumed(
    producer: pgflow.Engine, pg_dsn: str, pg_schema: str, client: pgflow.Client
) -> None:
    run = client.start_workflow("echo", 5)
    client.pause_workflow(run.id)
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4):
        stays(lambda: client.get_run(run.id).status == "paused", 0.6)
        client.resume_workflow(run.id)
        assert client.wait_for_run(run.id, timeout="10s").output == 5


def test_resume_of_a_run_that_is_neither_held_nor_paused_says_what_to_use(
    engine: pgflow.Engine, client: pgflow.Client
) -> None:
    run = client.start_workflow("waiter")
    client.wait_for_run(run.id, until="paused", timeout="10s")
    with pytest.raises(pgflow.InvalidStateError) as info:
        client.resume_workflow(run.id)
    assert "trigger_event" in str(info.value) and "fast_forward_workflow" in str(info.value)


def test_resume_completes_a_pause_step(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("pauser")
    waiting = client.wait_for_run(run.id, until="paused", timeout="10s")
    assert waiting.waiting is not None and waiting.waiting.kind == "pause" and not waiting.held
    client.resume_workflow(run.id)
    assert client.wait_for_run(run.id, timeout="10s").output == "resumed"


def test_resume_releases_both_hold_and_pause_step(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("pauser")
    client.wait_for_run(run.id, until="paused", timeout="10s")
    client.pause_workflow(run.id)
    client.resume_workflow(run.id)
    assert client.wait_for_run(run.id, timeout="10s").output == "resumed"


def test_cancel_rules(engine: pgflow.Engine, client: pgflow.Client) -> None:
    waiting = client.start_workflow("waiter")
    client.wait_for_run(waiting.id, until="paused", timeout="10s")
    cancelled = client.cancel_workflow(waiting.id)
    assert cancelled.status == "cancelled" and cancelled.completed_at is not None
    with pytest.raises(pgflow.InvalidStateError):
        client.cancel_workflow(waiting.id)
    with pytest.raises(pgflow.InvalidStateError):
        client.trigger_event(waiting.id, "go")
    done = client.start_workflow("echo", 1)
    client.wait_for_run(done.id, timeout="10s")
    with pytest.raises(pgflow.InvalidStateError):
        client.cancel_workflow(done.id)


def test_cancel_a_pending_run_never_executes_it(producer: pgflow.Engine, client: pgflow.Client,
                                                 pg_dsn: str, pg_schema: str) -> None:  # fmt: skip
    run = client.start_workflow("echo", 1)
    client.cancel_workflow(run.id)
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4):
        stays(lambda: client.get_run(run.id).status == "cancelled", 0.5)
    assert client.get_run(run.id).timeline == {}


@pytest.mark.parametrize(
    ("wf", "data", "expected"),
    [
        ("waiter", {"ff": 1}, {"first": 1, "data": {"ff": 1}}),
        ("waiter", None, {"first": 1, "data": {}}),
        ("delayer", None, "woke"),
        ("poller", {"found": True}, {"timed_out": False, "data": {"found": True}}),
        ("poller", None, {"timed_out": False, "data": {}}),
        ("pauser", None, "resumed"),
    ],
)
def test_fast_forward_per_kind(engine: pgflow.Engine, client: pgflow.Client, wf: str, data: Any,
                               expected: Any) -> None:  # fmt: skip
    run = client.start_workflow(wf)
    client.wait_for_run(run.id, until="paused", timeout="10s")
    client.fast_forward_workflow(run.id, data)
    done = client.wait_for_run(run.id, timeout="10s")
    assert done.status == "completed" and done.output == expected


def test_fast_forward_releases_a_held_pending_run(producer: pgflow.Engine, client: pgflow.Client,
                                                  pg_dsn: str, pg_schema: str) -> None:  # fmt: skip
    run = client.start_workflow("echo", 9)
    client.pause_workflow(run.id)
    released = client.fast_forward_workflow(run.id)
    assert not released.held and released.status == "pending"
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=ALL, lease="2s", concurrency=4):
        assert client.wait_for_run(run.id, timeout="10s").output == 9


def test_fast_forward_releases_a_held_waiting_run(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("delayer")
    client.wait_for_run(run.id, until="paused", timeout="10s")
    client.pause_workflow(run.id)
    client.fast_forward_workflow(run.id)
    assert client.wait_for_run(run.id, timeout="10s").output == "woke"


def test_fast_forward_on_a_run_that_is_not_waiting_changes_nothing(
    producer: pgflow.Engine, client: pgflow.Client
) -> None:
    run = client.start_workflow("echo", 1)
    same = client.fast_forward_workflow(run.id)
    assert same.status == "pending" and not same.held and same.timeline == {}


# -- atomic guards -------------------------------------------------------------------------------------------


def _race(n: int, fn: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_concurrent_cancels_one_wins(engine: pgflow.Engine, pg_dsn: str, pg_schema: str) -> None:
    clients = [pgflow.Client(pg_dsn, schema=pg_schema) for _ in range(2)]
    try:
        for c in clients:
            c.get_runs()
        for _ in range(5):
            run = clients[0].start_workflow("waiter")
            clients[0].wait_for_run(run.id, until="paused", timeout="10s")
            results = _race(2, lambda i=iter(clients), rid=run.id: next(i).cancel_workflow(rid))
            wins = [r for r in results if isinstance(r, pgflow.WorkflowRun)]
            losses = [r for r in results if isinstance(r, pgflow.InvalidStateError)]
            assert len(wins) == 1 and len(losses) == 1, results
            assert wins[0].status == "cancelled"
    finally:
        for c in clients:
            c.close()


# -- waiting -------------------------------------------------------------------------------------------------


def test_wait_for_run_until_paused_and_timeout(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("waiter")
    paused = client.wait_for_run(run.id, until=[pgflow.RunStatus.PAUSED], timeout="10s")
    assert paused.status == "paused"
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=run.id):
        client.wait_for_run(run.id, timeout="300ms")
    assert 0.25 <= time.monotonic() - began < 2


def test_wait_for_run_wakes_on_notify_not_polling(engine: pgflow.Engine, client: pgflow.Client) -> None:
    run = client.start_workflow("waiter")
    client.wait_for_run(run.id, until="paused", timeout="10s")
    result: dict[str, Any] = {}

    def waiter_thread() -> None:
        result["run"] = client.wait_for_run(run.id, timeout="10s")
        result["at"] = time.monotonic()

    t = threading.Thread(target=waiter_thread)
    t.start()
    time.sleep(0.3)
    sent = time.monotonic()
    client.trigger_event(run.id, "go")
    t.join(10)
    assert result["run"].status == "completed"
    assert result["at"] - sent < 0.5


# -- listing -------------------------------------------------------------------------------------------------


def test_get_runs_keyset_pages_with_equal_timestamps(
    producer: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    clock = SimClock("2024-01-01T00:00:00Z")
    with pgflow.Client(pg_dsn, schema=pg_schema, clock=clock) as c:
        runs = [c.start_workflow("echo", i) for i in range(35)]
        assert all(r.created_at == clock.now() for r in runs)
        pages = [c.get_runs(limit=10)]
        while pages[-1].has_more:
            pages.append(c.get_runs(limit=10, starting_after=pages[-1].next_cursor))
        assert [len(p.items) for p in pages] == [10, 10, 10, 5]
        assert pages[0].has_prev is False and pages[0].prev_cursor is None
        assert pages[-1].has_more is False and pages[-1].next_cursor is None
        assert all(p.has_prev and p.prev_cursor == p.items[0].id for p in pages[1:])
        assert all(p.has_more and p.next_cursor == p.items[-1].id for p in pages[:-1])
        seen = [r.id for p in pages for r in p.items]
        assert sorted(seen) == sorted(r.id for r in runs) and len(set(seen)) == 35
        assert seen == sorted(seen, reverse=True)  # equal created_at: ties broken by id, newest first
        # walking back reproduces the forward pages
        back = [pages[-1]]
        while back[-1].has_prev:
            back.append(c.get_runs(limit=10, ending_before=back[-1].prev_cursor))
        assert [[r.id for r in p.items] for p in reversed(back)] == [[r.id for r in p.items] for p in pages]
        assert back[-1].has_prev is False and back[-1].has_more is True


def test_get_runs_orders_newest_first_and_filters(
    producer: pgflow.Engine, pg_dsn: str, pg_schema: str
) -> None:
    clock = SimClock("2024-01-01T00:00:00Z")
    with pgflow.Client(pg_dsn, schema=pg_schema, clock=clock) as c:
        made = []
        for i in range(6):
            made.append(c.start_workflow("echo" if i % 2 else "other", i, resource_id=f"r{i % 3}"))
            clock.advance("1s")
        assert [r.id for r in c.get_runs().items] == [r.id for r in reversed(made)]
        assert {r.id for r in c.get_runs(workflow_id="echo").items} == {made[i].id for i in (1, 3, 5)}
        assert {r.id for r in c.get_runs(resource_id="r0").items} == {made[0].id, made[3].id}
        assert [r.id for r in c.get_runs(workflow_id="echo", resource_id="r0").items] == [made[3].id]
        c.cancel_workflow(made[2].id)
        assert [r.id for r in c.get_runs(statuses=["cancelled"]).items] == [made[2].id]
        assert len(c.get_runs(statuses=["pending", pgflow.RunStatus.CANCELLED]).items) == 6
        assert len(c.get_runs(limit=0).items) == 1  # clamped to 1..100
        assert len(c.get_runs(limit=1000).items) == 6
        with pytest.raises(pgflow.InvalidArgumentError):
            c.get_runs(starting_after=str(uuid.uuid4()))
        with pytest.raises(pgflow.InvalidArgumentError):
            c.get_runs(statuses=["bogus"])


def test_every_timestamp_comes_from_the_clock(producer: pgflow.Engine, pg_dsn: str, pg_schema: str) -> None:
    clock = SimClock("2030-06-01T12:00:00Z")
    with pgflow.Client(pg_dsn, schema=pg_schema, clock=clock) as c:
        run = c.start_workflow("echo", 1)
        assert run.created_at == clock.now() == c.get_run(run.id).created_at
        clock.advance("5m")
        held = c.pause_workflow(run.id)
        assert held.paused_at == clock.now() and held.updated_at == clock.now()


# -- AsyncClient ---------------------------------------------------------------------------------------------


def test_async_client_has_every_method(engine: pgflow.Engine, pg_dsn: str, pg_schema: str) -> None:
    async def main() -> None:
        async with pgflow.AsyncClient(pg_dsn, schema=pg_schema) as c:
            run = await c.start_workflow("waiter")
            paused = await c.wait_for_run(run.id, until="paused", timeout="10s")
            assert paused.status == "paused"
            progress = await c.check_progress(run.id)
            assert progress.completed_steps == 1
            await c.pause_workflow(run.id)
            await c.resume_workflow(run.id)
            await c.trigger_event(run.id, "go", {"async": True})
            done = await c.wait_for_run(run.id, timeout="10s")
            assert done.output["data"] == {"async": True}
            assert (await c.get_run(run.id)).status == "completed"
            page = await c.get_runs(workflow_id="waiter")
            assert [r.id for r in page.items] == [run.id]
            other = await c.start_workflow("delayer")
            await c.wait_for_run(other.id, until="paused", timeout="10s")
            await c.fast_forward_workflow(other.id)
            assert (await c.wait_for_run(other.id, timeout="10s")).output == "woke"
            third = await c.start_workflow("waiter")
            cancelled = await c.cancel_workflow(third.id)
            assert cancelled.status == "cancelled"
            with pytest.raises(pgflow.RunNotFoundError):
                await c.get_run(run.id, resource_id="someone-else")
            # several calls at once from one event loop
            many = await asyncio.gather(*(c.start_workflow("echo", i) for i in range(5)))
            results = await asyncio.gather(*(c.wait_for_run(r.id, timeout="10s") for r in many))
            assert [r.output for r in results] == list(range(5))

    asyncio.run(main())


def test_client_close_and_context_manager(pg_dsn: str, pg_schema: str, producer: pgflow.Engine) -> None:
    c = pgflow.Client(pg_dsn, schema=pg_schema)
    run = c.start_workflow("echo", 1)
    c.close()
    with pgflow.Client(pg_dsn, schema=pg_schema) as c2:
        assert c2.get_run(run.id).id == run.id
