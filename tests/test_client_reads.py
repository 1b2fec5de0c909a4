"""The client reads the dashboard needs (count_runs, list_workflows, get_mailbox, get_child_runs), on
every client: the Harness (in memory), a PostgreSQL-backed Client, and AsyncClient's mirror."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator

import pytest

import pgflow
from dashboard_support import FLOWS
from pgflow.testing import Harness

READS = ("count_runs", "list_workflows", "get_mailbox", "get_child_runs")


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        with Harness(FLOWS) as h:
            yield h
        return
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    with Harness(FLOWS, dsn=dsn, schema=schema) as h:
        yield h


def test_count_runs_has_every_status(harness: Harness) -> None:
    """count_runs gives every status as a key (zeros included), under workflow/resource filters."""
    assert harness.count_runs() == dict.fromkeys([s.value for s in pgflow.RunStatus], 0)
    harness.start_workflow("greet", resource_id="u1")
    harness.start_workflow("explode", resource_id="u2")
    harness.run_until_idle()
    assert harness.count_runs()["paused"] == 1 and harness.count_runs()["failed"] == 1
    assert harness.count_runs(workflow_id="greet") == {**harness.count_runs(resource_id="u1")}
    assert sum(harness.count_runs(workflow_id="nap").values()) == 0


def test_list_workflows_gives_ids_and_static_steps(harness: Harness) -> None:
    """list_workflows lists every registered workflow by id, with its static steps."""
    found = harness.list_workflows()
    assert [w.id for w in found] == sorted(wf.id for wf in FLOWS)
    greet = next(w for w in found if w.id == "greet")
    assert isinstance(greet, pgflow.WorkflowInfo) and [s.id for s in greet.steps] == [
        "add",
        "approval",
        "finish",
    ]
    assert greet.registered_at == harness.clock.now()


def test_get_mailbox_lists_unconsumed_events(harness: Harness) -> None:
    """get_mailbox gives the events no WaitFor consumed yet, oldest first; scoped by resource."""
    run = harness.start_workflow("greet", resource_id="u1")
    harness.trigger_event(run.id, "approved", {"ok": True})
    harness.trigger_event(run.id, "later", None)
    assert [(e.name, e.data) for e in harness.get_mailbox(run.id)] == [
        ("approved", {"ok": True}),
        ("later", {}),
    ]
    harness.run_until_idle()  # the WaitFor consumes "approved"
    (left,) = harness.get_mailbox(run.id, resource_id="u1")
    assert isinstance(left, pgflow.Event) and left.name == "later"
    with pytest.raises(pgflow.RunNotFoundError):
        harness.get_mailbox(run.id, resource_id="u2")


def test_get_child_runs_lists_children(harness: Harness) -> None:
    """get_child_runs gives the runs a run's Child steps started, as WorkflowRuns."""
    run = harness.start_workflow("parent")
    harness.run_until_idle()
    (child,) = harness.get_child_runs(run.id)
    assert child.workflow_id == "nap" and child.parent_run_id == run.id and child.parent_step_id == "spawn"
    assert "sleep" in child.timeline
    assert harness.get_child_runs(child.id) == []
    with pytest.raises(pgflow.RunNotFoundError):
        harness.get_child_runs("missing")


@pytest.mark.parametrize("read", ["get_mailbox", "get_child_runs"])
def test_bad_run_ids_are_named(harness: Harness, read: str) -> None:
    """A run id that is not a valid id is an InvalidArgumentError naming it."""
    with pytest.raises(pgflow.InvalidArgumentError, match="run_id"):
        getattr(harness, read)("")


def test_bad_filters_are_named(harness: Harness) -> None:
    """An over-long workflow or resource id is an InvalidArgumentError naming the argument."""
    with pytest.raises(pgflow.InvalidArgumentError, match="resource_id"):
        harness.count_runs(resource_id="x" * 300)


@pytest.mark.parametrize("name", READS)
def test_async_client_mirrors_the_reads(name: str) -> None:
    """AsyncClient has each read as a coroutine with the Client's parameters."""
    sync, coro = getattr(pgflow.Client, name), getattr(pgflow.AsyncClient, name)
    assert inspect.iscoroutinefunction(coro)
    assert inspect.signature(coro).parameters == inspect.signature(sync).parameters


@pytest.mark.postgres
def test_async_client_reads(pg_dsn: str, pg_schema: str) -> None:
    """The AsyncClient reads return what the Client's do."""
    with Harness(FLOWS, dsn=pg_dsn, schema=pg_schema) as h:
        run = h.start_workflow("greet")
        h.trigger_event(run.id, "note", {"n": 1})

        async def read() -> tuple[object, ...]:
            async with pgflow.AsyncClient(pg_dsn, schema=pg_schema) as client:
                return await asyncio.gather(
                    client.count_runs(), client.list_workflows(), client.get_mailbox(run.id),
                    client.get_child_runs(run.id),
                )  # fmt: skip

        counts, workflows, mailbox, children = asyncio.run(read())
        assert counts == h.count_runs() and workflows == h.list_workflows()
        assert mailbox == h.get_mailbox(run.id) and children == []
