"""Flow control through the public API (SPEC §16): ``@workflow(concurrency=, key_concurrency=)``,
``start_workflow(concurrency_key=, priority=)``, what a run held back by a limit looks like, and the
named errors for bad limits and priorities. The Harness (memory and PostgreSQL) drives the same
worker protocol as the engines."""

from __future__ import annotations

from typing import Any

import pytest

import pgflow
from pgflow import Run, WaitFor, workflow
from pgflow.errors import InvalidArgumentError, WorkflowDefinitionError
from pgflow.testing import Harness


@workflow("sync-account", key_concurrency=1, concurrency=2)
def sync_account(ctx: pgflow.Context[dict[str, str]]) -> pgflow.Flow[str]:
    yield from WaitFor("approved", event="approved")
    return (yield from Run("sync", lambda: ctx.input["account"]))


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        with Harness([sync_account]) as h:
            yield h
        return
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    with Harness([sync_account], dsn=dsn, schema=schema) as h:
        yield h


def test_one_run_per_key_at_a_time_and_two_overall(harness: Harness) -> None:
    started = []
    for account, priority in (("a", 0), ("a", 0), ("b", 5), ("c", 0)):  # in this order, a second apart
        run = harness.start_workflow(
            sync_account, {"account": account}, concurrency_key=account, priority=priority
        )
        started.append(run)
        harness.clock.advance("1s")
    a1, a2, b1, c1 = started
    harness.run_until_idle()
    runs = {r.id: harness.get_run(r.id) for r in (a1, a2, b1, c1)}
    assert runs[b1.id].status == "paused" and runs[a1.id].status == "paused"  # waiting for approval
    assert runs[b1.id].priority == 5 and runs[b1.id].concurrency_key == "b"
    for held_back in (a2.id, c1.id):  # held back by the limits: pending, waiting for nothing
        assert runs[held_back].status == "pending" and runs[held_back].waiting is None
    harness.trigger_event(a1.id, "approved")
    assert harness.run_until_complete(a1.id).output == "a"
    harness.run_until_idle()  # a1's places went to a2 (its key) and c1 (the workflow's)
    assert harness.get_run(a2.id).status == "paused" and harness.get_run(c1.id).status == "pending"
    for run in (b1, a2):
        harness.trigger_event(run.id, "approved")
    harness.run_until_idle()
    harness.trigger_event(c1.id, "approved")
    harness.run_until_idle()
    assert {harness.get_run(r.id).status.value for r in (a1, a2, b1, c1)} == {"completed"}


def test_a_run_held_back_by_a_limit_still_times_out(harness: Harness) -> None:
    """SPEC §5: the workflow timeout is enforced at ``timeout_at``, also while a limit holds the run
    back (it used to stay pending until a place freed); the run holding the place keeps it."""
    first = harness.start_workflow(sync_account, {"account": "a"}, concurrency_key="a")
    harness.run_until_idle()
    second = harness.start_workflow(sync_account, {"account": "a"}, concurrency_key="a", timeout="1h")
    harness.run_until_idle()
    assert harness.get_run(second.id).status == "pending"
    harness.advance("59m")
    assert harness.get_run(second.id).status == "pending"
    harness.advance("2m")
    timed_out = harness.get_run(second.id)
    assert timed_out.status == "failed" and timed_out.error is not None
    assert timed_out.error.type == "WorkflowTimeoutError"
    assert harness.get_run(first.id).status == "paused"  # still waiting for approval, in its place
    third = harness.start_workflow(sync_account, {"account": "a"}, concurrency_key="a")
    harness.run_until_idle()
    assert harness.get_run(third.id).status == "pending"  # key a: first still holds it
    harness.trigger_event(first.id, "approved")
    assert harness.run_until_complete(first.id).output == "a"
    harness.run_until_idle()
    assert harness.get_run(third.id).status == "paused"


def test_bad_limits_and_priorities_are_named_errors(harness: Harness) -> None:
    with pytest.raises(WorkflowDefinitionError, match="concurrency"):
        workflow("bad", concurrency=0)(lambda ctx: (yield))  # type: ignore[arg-type, misc]
    with pytest.raises(WorkflowDefinitionError, match="key_concurrency"):
        workflow("bad", key_concurrency="1")(lambda ctx: (yield))  # type: ignore[arg-type, misc]
    with pytest.raises(WorkflowDefinitionError, match="concurrency"):
        pgflow.ref("bad", concurrency=-1)
    with pytest.raises(InvalidArgumentError, match="priority"):
        harness.start_workflow(sync_account, {"account": "a"}, priority=1001)
    with pytest.raises(InvalidArgumentError, match="priority"):
        harness.start_workflow(sync_account, {"account": "a"}, priority=True)
    with pytest.raises(InvalidArgumentError, match="concurrency_key"):
        harness.start_workflow(sync_account, {"account": "a"}, concurrency_key="")
    assert harness.get_runs().items == []  # nothing was stored


def test_a_ref_carries_its_limits_to_the_implementation() -> None:
    billing = pgflow.ref("billing", concurrency=3, key_concurrency=1)

    @billing.implement(retries=1)
    def billing_impl(ctx: pgflow.Context[Any]) -> pgflow.Flow[None]:
        yield from Run("noop", lambda: None)

    assert (billing_impl.concurrency, billing_impl.key_concurrency) == (3, 1)
    assert billing_impl.settings["concurrency"] == 3


def test_priority_orders_the_backlog(harness: Harness) -> None:
    order: list[str] = []

    @workflow("ordered")
    def ordered(ctx: pgflow.Context[str]) -> pgflow.Flow[None]:
        yield from Run("note", order.append, ctx.input)

    harness.register(ordered)
    for name, priority in (("low", -1), ("normal", 0), ("urgent", 1000), ("normal2", 0)):
        harness.start_workflow(ordered, name, priority=priority)
        harness.clock.advance("1s")
    harness.run_until_idle()
    assert order == ["urgent", "normal", "normal2", "low"]
