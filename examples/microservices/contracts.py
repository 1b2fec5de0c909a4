"""The contract between the API service and the worker service: workflow refs and their inputs.

Both services import this small module; only the worker imports the workflow code. A ref is a
workflow's id and input schema, without any code, so the API can validate input and start runs
without depending on what the workflow does (or on its libraries and credentials).
"""

from __future__ import annotations

import attrs

import pgflow


@attrs.frozen
class PlaceOrder:
    customer_id: str
    sku: str
    quantity: int
    unit_price_cents: int


@attrs.frozen
class Refund:
    order_run_id: str
    reason: str


place_order = pgflow.ref("place-order", input=PlaceOrder)
refund_order = pgflow.ref("refund-order", input=Refund)

# Event names the API sends to running orders.
ORDER_APPROVED = "order-approved"
