"""The API service: starts and steers workflow runs with ``pgflow.Client`` and refs only.

It never imports the workflow code (see worker.py). Each function below would be an HTTP handler
in a web framework; ``customer_id`` would come from authentication. Passing it as ``resource_id``
makes every call an ownership check: another customer's run is reported as not found.

    python examples/microservices/worker.py   # terminal 1: the worker service
    python examples/microservices/api.py      # terminal 2: places and approves an order
"""

from __future__ import annotations

import os
import uuid

from contracts import ORDER_APPROVED, PlaceOrder, Refund, place_order, refund_order

import pgflow

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")


class OrdersApi:
    def __init__(self, client: pgflow.Client) -> None:
        self.client = client

    def post_order(self, customer_id: str, sku: str, quantity: int, request_id: str) -> dict:
        """POST /orders — the request id makes a retried POST return the same order."""
        run = self.client.start_workflow(
            place_order,
            PlaceOrder(customer_id, sku, quantity, unit_price_cents=1250),
            resource_id=customer_id,
            idempotency_key=f"order:{request_id}",
        )
        return {"order_id": run.id, "status": run.status.value}

    def post_approval(self, customer_id: str, order_id: str) -> dict:
        """POST /orders/{id}/approve — a back-office click, delivered as an event."""
        run = self.client.trigger_event(
            order_id, ORDER_APPROVED, {"by": "back-office"}, resource_id=customer_id
        )
        return {"order_id": run.id, "status": run.status.value}

    def get_order(self, customer_id: str, order_id: str) -> dict:
        """GET /orders/{id}"""
        progress = self.client.check_progress(order_id, resource_id=customer_id)
        return {
            "order_id": order_id,
            "status": progress.status.value,
            "progress": progress.completion_percentage,
            "waiting_for": progress.waiting.event if progress.waiting else None,
            "result": progress.output,
        }

    def post_refund(self, customer_id: str, order_id: str, reason: str) -> dict:
        """POST /orders/{id}/refund — starts another workflow, also by ref."""
        run = self.client.start_workflow(refund_order, Refund(order_id, reason), resource_id=customer_id)
        return {"refund_id": run.id}

    def wait(self, customer_id: str, run_id: str) -> dict:
        """Long-poll until a run ends (an HTTP API would rather return and let the caller poll)."""
        run = self.client.wait_for_run(run_id, timeout="20s", resource_id=customer_id)
        return {"status": run.status.value, "result": run.output}


def main() -> None:
    with pgflow.Client(schema=SCHEMA) as client:
        api = OrdersApi(client)
        request_id = f"req-{uuid.uuid4().hex[:8]}"  # sent by the HTTP client with its request
        order = api.post_order("cust-7", "KB-42", 2, request_id=request_id)
        again = api.post_order("cust-7", "KB-42", 2, request_id=request_id)  # a client retry
        print(
            f"[api] POST /orders -> {order} (retried POST: same order: {again['order_id'] == order['order_id']})"
        )

        client.wait_for_run(order["order_id"], until=["paused"], timeout="20s", resource_id="cust-7")
        print(f"[api] GET /orders/{{id}} -> {api.get_order('cust-7', order['order_id'])}")

        try:
            api.get_order("cust-8", order["order_id"])
        except pgflow.RunNotFoundError:
            print("[api] GET by another customer -> 404 (run not found)")

        print(f"[api] POST /orders/{{id}}/approve -> {api.post_approval('cust-7', order['order_id'])}")
        print(f"[api] order finished: {api.wait('cust-7', order['order_id'])}")

        refund = api.post_refund("cust-7", order["order_id"], "changed my mind")
        print(f"[api] refund finished: {api.wait('cust-7', refund['refund_id'])}")


if __name__ == "__main__":
    main()
