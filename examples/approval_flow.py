"""Human in the loop: an expense waits for a manager's decision, with reminders and escalation.

    python examples/approval_flow.py

Two expense reports are filed. The first manager answers after one reminder; nobody answers the
second, so it is escalated to a director, whose silence auto-rejects it. Real deployments would use
"2 days" where this demo uses 600 ms.
"""

from __future__ import annotations

import os
import time

import attrs

import pgflow
from pgflow import Run, WaitFor, workflow

SCHEMA = os.environ.get("PGFLOW_SCHEMA", "pgflow")
REMINDER_AFTER = "600ms"  # in production: "2 days"
REMINDERS = 2


@attrs.frozen
class Expense:
    employee: str
    amount: float
    manager: str


@attrs.frozen
class Decision:
    approved: bool
    by: str
    comment: str = ""


def notify(person: str, text: str) -> str:
    print(f"  [notify {person}] {text}")
    return person


def book_payment(employee: str, amount: float) -> str:
    print(f"  [payroll] paying {amount:.2f} to {employee}")
    return f"PAY-{employee}-{int(amount)}"


@workflow("expense-approval", input=Expense, timeout="30 days")
def expense_approval(ctx: pgflow.Context[Expense]):
    expense = ctx.input
    yield Run(
        "ask-manager", notify, expense.manager, f"please review {expense.employee}'s {expense.amount:.2f}"
    )

    decision = None
    for n in range(REMINDERS + 1):
        # WaitFor yields the event's data (structured as a Decision), or None when the timeout passes.
        decision = yield WaitFor(f"decision-{n}", event="decision", timeout=REMINDER_AFTER, schema=Decision)
        if decision is not None or n == REMINDERS:
            break
        yield Run(f"remind-{n}", notify, expense.manager, f"reminder {n + 1}: an expense is waiting")

    if decision is None:
        yield Run("escalate", notify, "director", f"{expense.manager} did not answer; please decide")
        decision = yield WaitFor(
            "director-decision", event="decision", timeout=REMINDER_AFTER, schema=Decision
        )
        if decision is None:
            decision = Decision(approved=False, by="policy", comment="no answer: auto-rejected")

    if not decision.approved:
        yield Run("tell-rejected", notify, expense.employee, f"rejected by {decision.by}: {decision.comment}")
        return {"approved": False, "by": decision.by}
    payment = yield Run("pay", book_payment, expense.employee, expense.amount)
    yield Run("tell-approved", notify, expense.employee, f"approved by {decision.by}")
    return {"approved": True, "by": decision.by, "payment": payment}


def wait_until(engine: pgflow.Engine, run_id: str, step_id: str, timeout: float = 15.0) -> None:
    """Block until the run has recorded ``step_id`` (a demo helper; an app would react to a UI click)."""
    deadline = time.monotonic() + timeout
    while step_id not in engine.get_run(run_id).timeline:
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} never reached step {step_id!r}")
        time.sleep(0.05)


def main() -> None:
    with pgflow.Engine(workflows=[expense_approval], schema=SCHEMA) as engine:
        answered = engine.start_workflow(expense_approval, Expense("grace", 120.50, "ada"))
        ignored = engine.start_workflow(expense_approval, Expense("linus", 9999.0, "bob"))
        print(f"filed two expenses: {answered.id[:8]} (ada decides) and {ignored.id[:8]} (nobody answers)")

        wait_until(engine, answered.id, "remind-0")
        # Invalid data does not fit the Decision schema: it stays in the mailbox and the run keeps waiting.
        engine.trigger_event(answered.id, "decision", {"approved": "sure"})
        engine.trigger_event(answered.id, "decision", {"approved": True, "by": "ada", "comment": "ok"})

        for run in (answered, ignored):
            done = engine.wait_for_run(run.id, timeout="30s")
            reminders = sum(1 for step in done.timeline if step.startswith("remind-"))
            print(f"expense {run.id[:8]}: {done.status}, {done.output}, {reminders} reminder(s)")


if __name__ == "__main__":
    main()
