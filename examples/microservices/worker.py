"""The worker service: implements the refs of contracts.py and executes their runs.

    python examples/microservices/worker.py

Runs until SIGINT/SIGTERM (Ctrl-C), then finishes in-flight steps and releases its runs. Start as
many of these as you like, on as many machines as you like, against the same database: each run is
executed by one worker at a time, and a crashed worker's runs are taken over by the others.
(``pgflow worker worker`` from this directory does the same as running this file.)
"""

from __future__ import annotations

import logging
import os

from contracts import ORDER_APPROVED, PlaceOrder, Refund, place_order, refund_order

import pgflow
from pgflow import Delay, Run, WaitFor

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")


def reserve_stock(sku: str, quantity: int) -> dict:
    print(f"  [worker] reserving {quantity} x {sku}")
    return {"sku": sku, "quantity": quantity, "reservation": f"res-{sku}-{quantity}"}


def charge(customer_id: str, cents: int) -> dict:
    print(f"  [worker] charging {customer_id} {cents / 100:.2f} EUR")
    return {"charge_id": f"ch-{customer_id}-{cents}", "cents": cents}


def ship(reservation: str) -> str:
    print(f"  [worker] shipping {reservation}")
    return f"track-{reservation}"


def refund_charge(charge_id: str, cents: int) -> str:
    print(f"  [worker] refunding {charge_id} ({cents / 100:.2f} EUR)")
    return f"re-{charge_id}"


@place_order.implement(retries=2, timeout="1 day")
def place_order_workflow(ctx: pgflow.Context[PlaceOrder]):
    order = ctx.input
    stock = yield Run("reserve", reserve_stock, order.sku, order.quantity)
    approval = yield WaitFor("approval", event=ORDER_APPROVED, timeout="1 hour")
    if approval is None:
        return {"status": "expired"}
    payment = yield Run("charge", charge, order.customer_id, order.quantity * order.unit_price_cents)
    yield Delay("packing", "300ms")
    tracking = yield Run("ship", ship, stock["reservation"])
    return {"status": "shipped", "approved_by": approval["by"], "tracking": tracking, "charge": payment}


@refund_order.implement(retries=3)
def refund_order_workflow(ctx: pgflow.Context[Refund]):
    # Workflows can read other runs through a client inside a step (never directly: it is I/O).
    order = yield Run("load-order", load_order_output, ctx.input.order_run_id)
    refund_id = yield Run("refund", refund_charge, order["charge"]["charge_id"], order["charge"]["cents"])
    return {"status": "refunded", "refund_id": refund_id, "reason": ctx.input.reason}


_client: pgflow.Client | None = None


def load_order_output(order_run_id: str) -> dict:
    global _client
    if _client is None:
        _client = pgflow.Client(schema=SCHEMA)
    return dict(_client.get_run(order_run_id).output)


def build_engine() -> pgflow.Engine:
    return pgflow.Engine(workflows=[place_order_workflow, refund_order_workflow], schema=SCHEMA)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print("[worker] serving place-order and refund-order until Ctrl-C", flush=True)
    build_engine().run_worker()
    if _client is not None:
        _client.close()
    print("[worker] stopped", flush=True)


if __name__ == "__main__":
    main()
