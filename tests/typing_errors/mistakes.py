"""Mistakes that type checkers must catch in code using pgflow (SPEC §17), and revealed types.

Never executed, and outside the type-checked paths: ``tests/test_typing.py`` runs mypy --strict and
pyright strict on this file and expects an error on exactly the lines marked ``# error``, and on each
line marked ``# reveal: T`` the revealed type ``T`` (module prefixes left out).
"""

# pyright: strict

from __future__ import annotations

from typing import Any, reveal_type

import attrs

import pgflow
from pgflow import All, Child, Flow, Poll, Run, Transaction, WaitFor


@attrs.frozen
class Signup:
    email: str


@attrs.frozen
class Other:
    name: str


@attrs.frozen
class Code:
    code: str


def charge(amount: int) -> int:
    return amount


def insert_row(conn: Any, amount: int) -> int:
    return amount


def check() -> dict[str, int] | None:
    return None


async def score(name: str) -> float:
    return 0.5


@pgflow.workflow("revealed")
def revealed(ctx: pgflow.Context[None]) -> Flow[None]:
    amount = yield from Run("charge", charge, 5)
    reveal_type(amount)  # reveal: int
    points = yield from Run("score", score, "a")
    reveal_type(points)  # reveal: float
    row = yield from Transaction("tx", insert_row, 5)
    reveal_type(row)  # reveal: int
    code = yield from WaitFor("code", event="code", schema=Code, timeout="1h")
    reveal_type(code)  # reveal: Code | None
    data = yield from WaitFor("data", event="data")
    reveal_type(data)  # reveal: Any
    polled = yield from Poll("poll", check)
    reveal_type(polled)  # reveal: PollResult[dict[str, int]]
    output = yield from Child("child", onboard, Signup("a@b.c"))
    reveal_type(output)  # reveal: int
    both = yield from All(Run("a", charge, 1), Run("b", score, "b"))
    reveal_type(both)  # reveal: list[int | float]


@pgflow.workflow("onboard", input=Signup)
def onboard(ctx: pgflow.Context[Signup]) -> Flow[int]:
    yield from Run("wrong-type", charge, "not-an-int")  # error
    yield from Run("too-many", charge, 5, "not-an-int")  # error
    yield from Run("missing", charge)  # error
    yield from Transaction("tx", insert_row, "x")  # error
    text: str = yield from Run("charge", charge, 5)  # error
    code = yield from WaitFor("code", event="code", schema=Code, timeout="1h")
    print(code.code)  # error
    polled = yield from Poll("poll", check)
    print(polled.data["a"])  # error
    both = yield from All(Run("a", charge, 1), Run("b", lambda: "x"))
    print(both[0] + 1)  # error
    yield from Child("child", onboard, Other("x"))  # error
    yield 5  # error
    return len(text)


@pgflow.workflow("mismatch", input=Signup)  # error
def mismatch(ctx: pgflow.Context[Other]) -> Flow[None]:
    yield from Run("noop", charge, 1)


welcome_ref = pgflow.ref("welcome", input=Signup, output=str)


@welcome_ref.implement()  # error
def welcome(ctx: pgflow.Context[Signup]) -> Flow[int]:
    return (yield from Run("charge", charge, 1))


def client_calls(client: pgflow.Client) -> str:
    client.start_workflow(charge)  # error
    client.start_workflow(onboard, 5)  # error
    client.start_workflow(onboard, Other("x"))  # error
    client.start_workflow(welcome_ref, Other("x"))  # error
    run = client.start_workflow(onboard, Signup("a@b.c"))
    return pgflow.output_of(run, onboard)  # error
