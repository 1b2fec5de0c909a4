"""Typed steps (SPEC §17), checked by ``mypy --strict`` and pyright strict in CI (never executed).

Each ``assert_type`` pins what a type checker infers; the mistakes a checker must catch (wrong ``Run``
arguments, a wrong ``start_workflow`` input, ...) are pinned by ``tests/test_typing.py``, which runs
both checkers on ``tests/typing/mistakes.py``.
"""

from __future__ import annotations

from typing import Any, assert_type

import attrs

import pgflow
from pgflow import (
    All,
    Child,
    Delay,
    Flow,
    Pause,
    Poll,
    PollResult,
    Run,
    Transaction,
    WaitFor,
    WaitUntil,
)
from pgflow.testing import Harness


@attrs.frozen
class Signup:
    email: str
    plan: str = "free"


@attrs.frozen
class Account:
    id: int
    email: str


@attrs.frozen
class Confirmation:
    code: str


@attrs.frozen
class Welcome:
    account: Account
    confirmed: bool


def create_account(email: str, plan: str = "free") -> Account:
    return Account(1, email)


async def fetch_score(account_id: int) -> float:
    return 0.5


def send_email(to: str, subject: str) -> None:
    pass


def check_ready() -> dict[str, Any] | None:
    return None


async def check_ready_async() -> bool:
    return True


def insert_row(conn: Any, account_id: int, note: str) -> int:
    return 1


def parse_code(raw: Any) -> str:
    return str(raw)


# -- every command, with yield from --------------------------------------------------------------


@pgflow.workflow("welcome", input=Signup)
def welcome(ctx: pgflow.Context[Signup]) -> Flow[Welcome]:
    assert_type(ctx.input, Signup)
    ctx.logger.info("starting %s", ctx.input.email)

    account = yield from Run("create-account", create_account, ctx.input.email)
    assert_type(account, Account)
    with_plan = yield from Run("create-account-2", create_account, ctx.input.email, ctx.input.plan)
    assert_type(with_plan, Account)

    score = yield from Run("score", fetch_score, account.id, retry=pgflow.Retry(max_attempts=2), timeout="5s")
    assert_type(score, float)  # an async def step gives what it returns, awaited

    yield from Run("send", send_email, account.email, "Welcome!")

    anything = yield from WaitFor("ping", event="ping")
    assert_type(anything, Any)
    maybe_any = yield from WaitFor("ping-timeout", event="ping", timeout="1h")
    assert_type(maybe_any, Any | None)
    confirmation = yield from WaitFor("confirm", event="confirmed", schema=Confirmation)
    assert_type(confirmation, Confirmation)
    maybe = yield from WaitFor("confirm-timeout", event="confirmed", schema=Confirmation, timeout="24h")
    assert_type(maybe, Confirmation | None)
    code = yield from WaitFor("code", event="code", schema=parse_code)
    assert_type(code, str)

    polled = yield from Poll("ready", check_ready, interval="1m", timeout="1h")
    assert_type(polled, PollResult[dict[str, Any]])
    assert_type(polled.data, dict[str, Any] | None)
    polled_async = yield from Poll("ready-async", check_ready_async)
    assert_type(polled_async, PollResult[bool])

    row = yield from Transaction("insert", insert_row, account.id, "welcome")
    assert_type(row, int)

    assert_type((yield from Delay("d", "1s")), None)
    assert_type((yield from WaitUntil("later", "2030-01-01T00:00:00Z")), None)
    assert_type((yield from Pause("hold")), None)

    both = yield from All(Run("a", create_account, "a@b.c"), Run("b", fetch_score, 1))
    assert_type(both, list[Account | float])
    same = yield from All(*[Run(f"score-{i}", fetch_score, i) for i in range(3)])
    assert_type(same, list[float])

    child = yield from Child("child", onboard, Signup("c@d.e"))
    assert_type(child, dict[str, int])
    by_id = yield from Child("by-id", "onboard", {"email": "c@d.e"})
    assert_type(by_id, Any)

    # plain `yield` still works and gives Any
    untyped = yield Run("untyped", create_account, "x@y.z")
    assert_type(untyped, Any)

    if ctx.patched("v2"):
        yield from Delay("v2-delay", 5)
    return Welcome(account, maybe is not None)


# -- workflow types: Flow, Workflow[I, O], helpers with yield from -------------------------------


def charge_twice(amount: int) -> Flow[list[int]]:
    """A helper sub-flow, used with ``yield from``."""
    first = yield from Run("charge-1", charge, amount)
    second = yield from Run("charge-2", charge, amount)
    return [first, second]


def charge(amount: int) -> int:
    return amount


@pgflow.workflow("onboard", input=Signup, retries=3, timeout="2 days")
def onboard(ctx: pgflow.Context[Signup]) -> Flow[dict[str, int]]:
    charges = yield from charge_twice(10)
    assert_type(charges, list[int])
    return {"charged": sum(charges)}


@pgflow.workflow
def bare(ctx: pgflow.Context[None]) -> Flow[str]:
    yield from Delay("d", "1s")
    return "done"


@pgflow.workflow("untyped-input")
def untyped_input(ctx: pgflow.Context[dict[str, int]]) -> Flow[int]:
    total = yield from Run("sum", sum, ctx.input.values())
    return total


@pgflow.workflow("validated", input=parse_code)
def validated(ctx: pgflow.Context[str]) -> Flow[str]:
    yield from Pause("hold")
    return ctx.input


assert_type(welcome, pgflow.Workflow[Signup, Welcome])
assert_type(onboard, pgflow.Workflow[Signup, dict[str, int]])
assert_type(bare, pgflow.Workflow[None, str])
assert_type(untyped_input, pgflow.Workflow[dict[str, int], int])
assert_type(validated, pgflow.Workflow[Any, str])

signup_ref = pgflow.ref("onboard", input=Signup, output=dict[str, int])
assert_type(signup_ref, pgflow.WorkflowRef[Signup, dict[str, int]])
by_name = pgflow.ref("onboard")
assert_type(by_name, pgflow.WorkflowRef[Any, Any])
welcome_ref: pgflow.WorkflowRef[Signup, Welcome] = pgflow.ref("welcome-2", input=Signup, output=Welcome)


@welcome_ref.implement(retries=1)
def welcome_2(ctx: pgflow.Context[Signup]) -> Flow[Welcome]:
    account = yield from Run("create-account", create_account, ctx.input.email)
    return Welcome(account, False)


assert_type(welcome_2, pgflow.Workflow[Signup, Welcome])


# -- clients: start_workflow checks the input, output_of types the output ------------------------


def client_calls(client: pgflow.Client) -> Welcome:
    run = client.start_workflow(welcome, Signup("a@b.c"), resource_id="u1")
    client.start_workflow(welcome, {"email": "a@b.c"})  # a mapping of the fields is fine too
    client.start_workflow(welcome_ref, Signup("a@b.c"))
    client.start_workflow(bare)
    client.start_workflow("welcome", {"anything": 1})
    done = client.wait_for_run(run.id, timeout="5s")
    result = pgflow.output_of(done, welcome)
    assert_type(result, Welcome)
    assert_type(pgflow.output_of(done, welcome_ref), Welcome)
    assert_type(pgflow.output_of(done, by_name), Any)
    return result


async def async_calls(client: pgflow.AsyncClient) -> dict[str, int]:
    run = await client.start_workflow(onboard, Signup("a@b.c"), idempotency_key="k")
    done = await client.wait_for_run(run.id)
    return pgflow.output_of(done, onboard)


def harness_calls() -> str:
    with Harness(workflows=[welcome, onboard, bare]) as h:
        run = h.start_workflow(bare, None)
        return pgflow.output_of(h.run_until_complete(run.id), bare)
