"""Typed usage of the public API, checked by ``mypy --strict`` and pyright strict in CI (never
executed). Plain ``yield`` (the value is ``Any``); ``steps.py`` pins the typed ``yield from``.

If a public signature changes in a way that breaks user code written against SPEC, this file stops
type-checking.
"""

from __future__ import annotations

from typing import Any

import attrs

import pgflow
from pgflow.testing import Harness, SimClock


@attrs.frozen
class Signup:
    email: str
    plan: str = "free"


def create_account(email: str) -> dict[str, Any]:
    return {"id": 1, "email": email}


@pgflow.workflow("onboard-user", input=Signup, retries=3, timeout="2 days")
def onboard_user(ctx: pgflow.Context[Signup]) -> pgflow.Flow[dict[str, Any]]:
    user = yield pgflow.Run(
        "create-account", create_account, ctx.input.email, retry=pgflow.Retry(max_attempts=2)
    )
    confirmed = yield pgflow.WaitFor("await-confirmation", event="user-confirmed", timeout="24h")
    polled = yield pgflow.Poll("poll", lambda: True, interval="30s", timeout="1h")
    both = yield pgflow.All(pgflow.Delay("d", "1s"), pgflow.Sleep("s", 2))
    return {"user": user, "confirmed": confirmed, "polled": polled, "both": both}


@pgflow.workflow
def bare(ctx: pgflow.Context[Any]) -> pgflow.Flow[None]:
    yield pgflow.Pause("hold")


signup_ref: pgflow.WorkflowRef = pgflow.ref("signup", input=Signup)


@signup_ref.implement(retries=1)
def signup(ctx: pgflow.Context[Signup]) -> pgflow.Flow[None]:
    yield pgflow.WaitUntil("later", "2030-01-01T00:00:00Z")


def client_calls(client: pgflow.Client) -> None:
    run: pgflow.WorkflowRun = client.start_workflow(
        signup_ref, Signup("a@b.c"), resource_id="u1", idempotency_key="k"
    )
    run = client.trigger_event(run.id, "user-confirmed", {"ok": True}, resource_id="u1")
    run = client.pause_workflow(run.id)
    run = client.resume_workflow(run.id)
    run = client.fast_forward_workflow(run.id, {"x": 1})
    progress: pgflow.Progress = client.check_progress(run.id)
    pct: float = progress.completion_percentage
    page: pgflow.RunPage = client.get_runs(statuses=["pending"], limit=10, starting_after=run.id)
    done = client.wait_for_run(run.id, until={pgflow.RunStatus.COMPLETED}, timeout="5s")
    status: pgflow.RunStatus = done.status
    terminal: bool = status in pgflow.TERMINAL
    step: pgflow.StepRecord | None = done.timeline.get("create-account")
    waiting: pgflow.Waiting | None = done.waiting
    error: pgflow.RunError | None = done.error
    print(pct, page.has_more, terminal, step, waiting, error)
    client.cancel_workflow(run.id)


async def async_calls(client: pgflow.AsyncClient) -> pgflow.WorkflowRun:
    run = await client.start_workflow("onboard-user", {"email": "a@b.c"})
    return await client.wait_for_run(run.id, timeout="5s")


def engine_and_harness() -> None:
    with pgflow.Engine("postgresql://localhost/app", workflows=[onboard_user], concurrency=4) as engine:
        engine.register(bare)
        ids: list[str] = list(engine.workflows)
        print(ids)
    with Harness(workflows=[onboard_user], clock=SimClock("2030-01-01T00:00:00Z")) as h:
        run = h.start_workflow(onboard_user, Signup("a@b.c"))
        h.run_until_idle()
        h.advance("24h")
        h.crash_before("create-account")
        final: pgflow.WorkflowRun = h.run_until_complete(run.id)
        print(final.output, pgflow.parse_duration("1h30m").in_seconds())
