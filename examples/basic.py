"""The basics: steps, a durable delay, an event, and the run's timeline.

    python examples/basic.py

Uses PGFLOW_DATABASE_URL (or DATABASE_URL), else an embedded PostgreSQL in ./.pgflow/.
PGFLOW_SCHEMA picks the schema (default "pgflow").
"""

from __future__ import annotations

import os

import attrs

import pgflow
from pgflow import Delay, Run, WaitFor, workflow

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")


@attrs.frozen
class Order:
    order_id: str
    items: list[str]
    email: str


def reserve_items(items: list[str]) -> dict:
    # In real life: an UPDATE on your inventory table, or a call to the warehouse API.
    return {"reserved": items, "warehouse": "north"}


def send_confirmation(email: str, order_id: str) -> str:
    print(f"  [email] to {email}: order {order_id} is confirmed")
    return f"msg-{order_id}"


@workflow("process-order", input=Order, timeout="1 day")
def process_order(ctx: pgflow.Context[Order]):
    reservation = yield Run("reserve", reserve_items, ctx.input.items)
    yield Run("confirm", send_confirmation, ctx.input.email, ctx.input.order_id)
    yield Delay("cooling-off", "500ms")  # a durable timer: no thread sleeps while it runs
    shipped = yield WaitFor("shipped", event="parcel-shipped", timeout="10s")
    if shipped is None:
        return {"order_id": ctx.input.order_id, "status": "not shipped"}
    return {
        "order_id": ctx.input.order_id,
        "status": "shipped",
        "warehouse": reservation["warehouse"],
        "tracking": shipped["tracking"],
    }


def main() -> None:
    with pgflow.Engine(workflows=[process_order], schema=SCHEMA) as engine:
        run = engine.start_workflow(
            process_order, Order("A-1001", ["book", "lamp"], "ada@example.com"), resource_id="customer-42"
        )
        print(f"started run {run.id} ({run.status})")

        paused = engine.wait_for_run(run.id, until=["paused"], timeout="10s")
        print(f"the run waits at step {paused.waiting.step_id!r} ({paused.waiting.kind})")

        # The warehouse reports the shipment; the event waits in the run's mailbox if the run is
        # still in its cooling-off delay.
        engine.trigger_event(run.id, "parcel-shipped", {"tracking": "1Z999AA10123456784"})
        done = engine.wait_for_run(run.id, timeout="10s")

        print(f"run {done.status}: {done.output}")
        print("timeline:")
        for step in done.timeline.values():
            took = (step.completed_at - step.started_at).total_seconds() if step.completed_at else 0.0
            print(f"  {step.step_id:12} {step.kind:9} {step.status:10} {took:6.3f}s")
        progress = engine.check_progress(run.id)
        print(
            f"progress: {progress.completed_steps}/{progress.total_steps} steps, {progress.completion_percentage}%"
        )


if __name__ == "__main__":
    main()
