"""The asyncio API (SPEC §17), checked by ``mypy --strict`` and pyright strict in CI (never executed):
``AsyncEngine``, ``AsyncClient`` and ``AsyncHarness`` give the same types as their blocking twins, as
coroutines; an ``async def`` step gives its awaited type."""

from __future__ import annotations

import asyncio
from typing import Any, assert_type

import attrs
import psycopg

import pgflow
from pgflow import Flow, Run, Transaction
from pgflow.testing import AsyncHarness


@attrs.frozen
class Order:
    id: str
    cents: int


async def charge(order: Order) -> str:
    await asyncio.sleep(0)
    return f"paid {order.id}"


async def book(conn: psycopg.AsyncConnection[Any], order_id: str) -> int:
    await conn.execute("SELECT 1")
    return 1


@pgflow.workflow("async-pay", input=Order)
def pay(ctx: pgflow.Context[Order]) -> Flow[str]:
    receipt = yield from Run("charge", charge, ctx.input)
    assert_type(receipt, str)
    # an async Transaction function: pyright gives int; mypy gives Any when the function's parameters
    # mention Any (AsyncConnection[Any]: two overloads match through Any), so annotate the target
    booked: int = yield from Transaction("book", book, ctx.input.id)
    return f"{receipt} ({booked})"


async def use_engine() -> None:
    async with pgflow.AsyncEngine(workflows=[pay], concurrency=1000) as engine:
        run = await engine.start_workflow(pay, Order("o-1", 100))
        assert_type(run, pgflow.WorkflowRun)
        done = await engine.wait_for_run(run.id, timeout="10s")
        assert_type(pgflow.output_of(done, pay), str)
        assert_type(await engine.get_runs(limit=5), pgflow.RunPage)
        assert_type(await engine.count_runs(), dict[str, int])
        await engine.stop(timeout="5s")


async def use_client() -> None:
    client = pgflow.AsyncClient(schema="pgflow")
    progress = await client.check_progress("run-id")
    assert_type(progress, pgflow.Progress)
    assert_type(await client.trigger_event("run-id", "paid", {"cents": 1}), pgflow.WorkflowRun)
    await client.close()


async def use_harness() -> None:
    async with AsyncHarness([pay]) as h:
        run = await h.start_workflow(pay, {"id": "o-2", "cents": 5})
        h.crash_before("charge")
        await h.advance("1h")
        finished = await h.run_until_complete(run.id)
        assert_type(finished, pgflow.WorkflowRun)
