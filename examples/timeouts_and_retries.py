"""Failure handling: per-step Retry, step timeouts, run retries and the workflow timeout.

    python examples/timeouts_and_retries.py

Four small workflows, each showing one mechanism:

1. ``flaky-api``     a step that fails twice, then succeeds, under a Retry policy;
2. ``slow-report``   a step that exceeds its timeout on every attempt; the workflow catches the failure;
3. ``nightly-sync``  a workflow whose first two attempts fail: run retries with a backoff;
4. ``quote``         a workflow timeout enforced while the run waits for an event that never comes.
"""

from __future__ import annotations

import os
import threading
import time

import pgflow
from pgflow import Retry, Run, StepFailedError, WaitFor, workflow

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")

_lock = threading.Lock()
calls: dict[str, int] = {}


def count(name: str) -> int:
    with _lock:
        calls[name] = calls.get(name, 0) + 1
        return calls[name]


# 1. A step retried in place --------------------------------------------------------------------------


def fetch_exchange_rate(currency: str) -> float:
    n = count("rate")
    if n < 3:
        print(f"  [rates] attempt {n}: connection reset")
        raise ConnectionError("connection reset by peer")
    print(f"  [rates] attempt {n}: ok")
    return 1.08


class InvalidCurrency(Exception):
    pass


@workflow("flaky-api")
def flaky_api(ctx):
    # Waits of 100 ms, then 200 ms between attempts: durable timers, not thread sleeps.
    policy = Retry(max_attempts=5, initial="100ms", factor=2.0, jitter=0.0, non_retryable=(InvalidCurrency,))
    rate = yield Run("exchange-rate", fetch_exchange_rate, "EUR", retry=policy)
    return {"rate": rate}


# 2. A step timeout, caught by the workflow ------------------------------------------------------------


def build_report() -> str:
    time.sleep(1.0)  # far longer than the step's timeout
    return "report.pdf"


@workflow("slow-report")
def slow_report(ctx):
    try:
        url = yield Run("build", build_report, timeout="200ms", retry=Retry(max_attempts=2, initial="100ms"))
    except StepFailedError as exc:
        # The original exception's type and message, and how often it was tried.
        note = f"  [report] {exc.error_type} after {exc.attempts} attempts, using yesterday's report"
        yield Run("fallback", print, note)
        return {"report": None, "error": exc.error_type}
    return {"report": url}


# 3. Run retries: an exception escapes the workflow; the whole run is retried ------------------------------


def sync_inventory(attempt: int) -> int:
    print(f"  [sync] run attempt {attempt}: syncing")
    if attempt < 2:
        raise RuntimeError(f"upstream returned 503 (attempt {attempt})")
    return 1234


@workflow("nightly-sync", retries=3, retry_backoff="100ms")
def nightly_sync(ctx):
    started = yield Run("mark-start", lambda: f"sync started on attempt {ctx.attempt}")
    # Completed steps are not executed again on a retry: "mark-start" keeps its first result.
    synced = yield Run("sync", sync_inventory, ctx.attempt)
    return {"synced": synced, "attempt": ctx.attempt, "first": started}


# 4. The workflow timeout ---------------------------------------------------------------------------------


@workflow("quote", timeout="1s")
def quote(ctx):
    yield Run("send-quote", lambda: print("  [quote] sent; the customer has 1 s to accept"))
    yield WaitFor("accepted", event="quote-accepted")  # no timeout here: the workflow's applies
    return "accepted"


def main() -> None:
    workflows = [flaky_api, slow_report, nightly_sync, quote]
    with pgflow.Engine(workflows=workflows, schema=SCHEMA) as engine:
        for wf in workflows:
            print(f"{wf.id}:")
            run = engine.start_workflow(wf)
            done = engine.wait_for_run(run.id, timeout="20s")
            error = f", error: {done.error.type}" if done.error else ""
            print(f"  -> {done.status}, output {done.output}, run retries {done.retry_count}{error}")
            for step in done.timeline.values():
                if step.attempts > 1:
                    print(f"     step {step.step_id!r}: {step.attempts} attempts")


if __name__ == "__main__":
    main()
