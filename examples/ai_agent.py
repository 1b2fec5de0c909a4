"""A multi-step AI agent: a flaky LLM, parallel tool calls, and a human reviewer.

    python examples/ai_agent.py

The agent plans with an LLM (a fake one here that hits rate limits: each call is retried with a
durable backoff), calls three tools at once with ``All``, drafts an answer, and waits for a human
to approve it. The reviewer asks for one change, then approves. Every LLM call and tool result is
recorded: after a crash or a redeploy, a recorded LLM call is never made (and paid for) again, and
the review can take days without holding a thread or a connection. No network access is needed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pgflow
from pgflow import All, Retry, Run, WaitFor, workflow

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")


class RateLimitError(Exception):
    """What an LLM API raises under load (HTTP 429)."""


class FakeLLM:
    """A deterministic stand-in for an LLM API; every third call is rate limited."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0

    def complete(self, prompt: str) -> str:
        with self._lock:
            self.calls += 1
            n = self.calls
        if n % 3 == 1:
            print(f"  [llm] call {n}: 429 rate limited")
            raise RateLimitError("429: rate limit exceeded, retry later")
        print(f"  [llm] call {n}: {prompt.splitlines()[0][:70]}")
        if prompt.startswith("PLAN"):
            return "search the web; check the customer's orders; read the refund policy"
        feedback = prompt.split("FEEDBACK:", 1)[1].strip() if "FEEDBACK:" in prompt else ""
        tone = "Apologies for the delay! " if "apolog" in feedback else ""
        return f"{tone}Your order #881 shipped late, so you are eligible for a full refund within 30 days."


llm = FakeLLM()
LLM_RETRY = Retry(max_attempts=5, initial="100ms", factor=2.0, max_delay="2s", non_retryable=(ValueError,))


def plan(question: str) -> str:
    return llm.complete(f"PLAN how to answer: {question}")


def draft_answer(question: str, evidence: list[str], feedback: str) -> str:
    context = "\n".join(evidence)
    return llm.complete(f"ANSWER: {question}\nEVIDENCE:\n{context}\nFEEDBACK: {feedback}")


async def search_web(query: str) -> str:
    await asyncio.sleep(0.3)  # pretend network latency
    return f"web: 3 articles about {query!r}"


async def query_orders(customer: str) -> str:
    await asyncio.sleep(0.3)
    return f"db: {customer} has order #881, shipped 9 days late"


async def read_policy(topic: str) -> str:
    await asyncio.sleep(0.3)
    return f"docs: {topic} policy allows refunds within 30 days for late shipments"


def send_reply(customer: str, text: str) -> str:
    print(f"  [email to {customer}] {text}")
    return "sent"


@workflow("support-agent", timeout="7 days")
def support_agent(ctx: pgflow.Context[dict]):
    question, customer = ctx.input["question"], ctx.input["customer"]
    ctx.logger.info("agent started for %s", customer)  # logged once, not on every replay

    steps = yield Run("plan", plan, question, retry=LLM_RETRY)

    started = yield Run("tools-start", time.time)  # a clock read is a step: recorded once
    evidence = yield All(  # three tool calls, executed concurrently
        Run("tool-web", search_web, question),
        Run("tool-orders", query_orders, customer),
        Run("tool-policy", read_policy, "refund"),
    )
    finished = yield Run("tools-end", time.time)

    feedback = ""
    for n in range(3):
        draft = yield Run(f"draft-{n}", draft_answer, question, evidence, feedback, retry=LLM_RETRY)
        review = yield WaitFor(f"review-{n}", event="review", timeout="1 day")
        if review is None:
            return {"status": "no-review", "draft": draft}
        if review.get("approved"):
            yield Run("send", send_reply, customer, draft)
            return {
                "status": "sent",
                "plan": steps,
                "drafts": n + 1,
                "tools_seconds": round(finished - started, 2),
                "answer": draft,
            }
        feedback = review.get("feedback", "")
    return {"status": "gave-up"}


def wait_for_review(engine: pgflow.Engine, run_id: str, n: int) -> str:
    """Block until the run waits at review ``n``; return the draft (a UI would show it)."""
    deadline = time.monotonic() + 20
    while True:
        run = engine.get_run(run_id)
        if run.waiting is not None and run.waiting.step_id == f"review-{n}":
            return str(run.timeline[f"draft-{n}"].output)
        if run.status in pgflow.TERMINAL or time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} is {run.status}, not waiting for review {n}")
        engine.wait_for_run(run_id, until=["paused"], timeout="5s")
        time.sleep(0.02)


def main() -> None:
    with pgflow.Engine(workflows=[support_agent], schema=SCHEMA, concurrency=4) as engine:
        run = engine.start_workflow(
            "support-agent",
            {"customer": "ada@example.com", "question": "My order arrived late. Can I get a refund?"},
            resource_id="ada@example.com",
        )
        print(f"agent run {run.id} started")

        draft = wait_for_review(engine, run.id, 0)
        print(f"  [reviewer] draft 1: {draft!r} -> asks for an apology")
        engine.trigger_event(run.id, "review", {"approved": False, "feedback": "please apologise first"})

        draft = wait_for_review(engine, run.id, 1)
        print(f"  [reviewer] draft 2: {draft!r} -> approved")
        engine.trigger_event(run.id, "review", {"approved": True})

        done = engine.wait_for_run(run.id, timeout="20s")
        print(f"agent run {done.status}: {done.output['status']} after {done.output['drafts']} drafts")
        print(f"tools ran concurrently: 3 x 0.3 s of latency took {done.output['tools_seconds']} s")
        retried = {s.step_id: s.attempts for s in done.timeline.values() if s.attempts > 1}
        print(f"LLM steps retried after rate limits: {retried}")


if __name__ == "__main__":
    main()
