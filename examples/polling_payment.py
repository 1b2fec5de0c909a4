"""Waiting for an external system with Poll: a bank transfer that settles (or never does).

    python examples/polling_payment.py

The workflow asks a (fake) payment provider for the transfer's status every 200 ms. Between checks
the run is suspended in the database: no thread sleeps and no connection is held. One transfer
settles after a few checks; the other never does, so the Poll times out and the order is cancelled.
"""

from __future__ import annotations

import os
import threading

import pgflow
from pgflow import Poll, Run, workflow

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")


class FakePaymentProvider:
    """Stands in for a payment API: a transfer settles after ``settle_after`` status checks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, int] = {}
        self.settle_after = {"tr-fast": 3, "tr-never": 10**9}

    def create_transfer(self, order_id: str, cents: int) -> str:
        transfer_id = "tr-fast" if order_id == "order-1" else "tr-never"
        print(f"  [provider] transfer {transfer_id} created for {order_id}: {cents / 100:.2f} EUR")
        return transfer_id

    def status(self, transfer_id: str) -> dict | None:
        with self._lock:
            self._checks[transfer_id] = self._checks.get(transfer_id, 0) + 1
            n = self._checks[transfer_id]
        print(f"  [provider] check #{n} of {transfer_id}")
        if n >= self.settle_after[transfer_id]:
            return {"transfer_id": transfer_id, "status": "settled", "checks": n}
        return None  # None (or False) means "not yet": Poll asks again after its interval


provider = FakePaymentProvider()


def fulfil(order_id: str) -> str:
    print(f"  [warehouse] shipping {order_id}")
    return f"ship-{order_id}"


def cancel_order(order_id: str) -> str:
    print(f"  [shop] cancelling {order_id}: payment never arrived")
    return "cancelled"


@workflow("pay-by-transfer")
def pay_by_transfer(ctx: pgflow.Context[dict]):
    order_id = ctx.input["order_id"]
    transfer_id = yield Run("create-transfer", provider.create_transfer, order_id, ctx.input["cents"])
    payment = yield Poll(
        "await-settlement",
        lambda: provider.status(transfer_id),
        interval="200ms",  # in production: "5m"
        timeout="2s",  # in production: "3 days"
    )
    if payment.timed_out:
        yield Run("cancel", cancel_order, order_id)
        return {"order_id": order_id, "paid": False}
    shipment = yield Run("fulfil", fulfil, order_id)
    return {"order_id": order_id, "paid": True, "checks": payment.data["checks"], "shipment": shipment}


def main() -> None:
    # Poll intervals below min_poll_interval (1 s by default) are refused; this demo polls faster.
    engine = pgflow.Engine(workflows=[pay_by_transfer], schema=SCHEMA, min_poll_interval="100ms")
    with engine:
        runs = [
            engine.start_workflow("pay-by-transfer", {"order_id": "order-1", "cents": 4999}),
            engine.start_workflow("pay-by-transfer", {"order_id": "order-2", "cents": 1500}),
        ]
        for run in runs:
            done = engine.wait_for_run(run.id, timeout="20s")
            step = done.timeline["await-settlement"]
            print(
                f"{done.input['order_id']}: {done.status}, {done.output} "
                f"(poll timed out: {step.timed_out}, {step.attempts} checks recorded)"
            )


if __name__ == "__main__":
    main()
