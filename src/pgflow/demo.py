"""``pgflow demo``: a small onboarding workflow, run end to end on a real engine and database.

The workflow creates an account, sends a welcome e-mail, waits for the user to confirm it (an
event), cools down for a second, polls until the profile is verified, and activates the account.
:func:`run_demo` starts one run, delivers the confirmation event when the run waits for it, and
prints each step as the engine records it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any, TextIO

import attrs

from .commands import Delay, Poll, PollResult, Run, WaitFor
from .definition import Context, Workflow, workflow
from .records import TERMINAL, Progress, RunStatus, StepRecord

__all__ = ["DEMO_EVENT", "DEMO_WORKFLOW_ID", "Signup", "onboarding", "run_demo"]

DEMO_WORKFLOW_ID = "pgflow-demo-onboarding"
DEMO_EVENT = "email-confirmed"
POLLS_UNTIL_READY = 3  # the profile check answers "not yet" twice, then "verified"


@attrs.frozen
class Signup:
    email: str
    plan: str = "free"


# --- the steps' side effects (a real app would call its database, mailer, APIs) ----------------------


def create_account(email: str) -> dict[str, Any]:
    return {"user_id": f"u_{uuid.uuid4().hex[:8]}", "email": email}


def send_welcome_email(email: str) -> dict[str, Any]:
    return {"to": email, "message_id": f"msg_{uuid.uuid4().hex[:8]}", "subject": "Welcome! Please confirm"}


_checks: dict[str, int] = {}
_checks_lock = threading.Lock()


def profile_verified(run_id: str) -> dict[str, Any] | None:
    """A slow external check: "not yet" (None) for the first ticks, then the verification."""
    with _checks_lock:
        count = _checks.get(run_id, 0) + 1
        _checks[run_id] = count
    if count < POLLS_UNTIL_READY:
        return None
    return {"verified": True, "checks": count}


def activate_account(user_id: str, plan: str) -> dict[str, Any]:
    return {"user_id": user_id, "plan": plan, "active": True}


# --- the workflow ------------------------------------------------------------------------------------


def onboarding_steps(ctx: Context[Signup]) -> Generator[Any, Any, dict[str, Any]]:
    user = yield Run("create-account", create_account, ctx.input.email)
    yield Run("send-welcome", send_welcome_email, user["email"])
    confirmation = yield WaitFor("await-confirmation", event=DEMO_EVENT, timeout="10m")
    if confirmation is None:
        return {"user_id": user["user_id"], "status": "expired"}
    yield Delay("cool-down", "1s")
    check: PollResult = yield Poll(
        "verify-profile", functools.partial(profile_verified, ctx.run_id), interval="200ms", timeout="1m"
    )
    if check.timed_out:
        return {"user_id": user["user_id"], "status": "unverified"}
    account = yield Run("activate", activate_account, user["user_id"], ctx.input.plan)
    return {
        "status": "active",
        "user_id": account["user_id"],
        "email": user["email"],
        "plan": account["plan"],
        "confirmed_via": confirmation.get("via") if isinstance(confirmation, dict) else None,
        "profile_checks": check.data.get("checks") if isinstance(check.data, dict) else None,
    }


onboarding: Workflow = workflow(DEMO_WORKFLOW_ID, input=Signup, retries=2, timeout="1h")(onboarding_steps)


# --- running it ----------------------------------------------------------------------------------------


def _symbols(stream: TextIO) -> dict[str, str]:
    fancy = {"done": "✓", "wait": "…", "fail": "✗", "arrow": "→", "dash": "—"}
    try:
        "".join(fancy.values()).encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return {"done": "+", "wait": ".", "fail": "x", "arrow": "->", "dash": "-"}
    return fancy


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _database_label(dsn: str | None) -> str:
    def describe(conninfo: str, source: str) -> str:
        try:
            from psycopg.conninfo import conninfo_to_dict

            parts = conninfo_to_dict(conninfo)
            where = (
                f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"
            )
        except Exception:
            where = "(connection string)"
        return f"{where} ({source})"

    if dsn:
        return describe(dsn, "--dsn")
    for name in ("PGFLOW_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return describe(os.environ[name], name)
    data_dir = os.path.abspath(os.path.expanduser(os.environ.get("PGFLOW_DATA_DIR", ".pgflow")))
    return f"embedded PostgreSQL in {data_dir} (set PGFLOW_DATABASE_URL or --dsn to use your own)"


class _Printer:
    """Prints each timeline entry once, again when its status changes, with the run's progress."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.sym = _symbols(out)
        self.seen: dict[str, tuple[str, int]] = {}

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def steps(self, progress: Progress) -> None:
        for record in progress.timeline.values():
            key = (record.status, record.attempts)
            if self.seen.get(record.step_id) == key:
                continue
            if record.status == "waiting" and self.seen.get(record.step_id, ("",))[0] == "waiting":
                continue  # a poll tick: still waiting, nothing new to say
            self.seen[record.step_id] = key
            self.say(self._line(record, progress))

    def _line(self, record: StepRecord, progress: Progress) -> str:
        head = f"  {{mark}} {record.step_id:<19} {record.kind:<9}"
        pct = f"{self._percentage(record, progress):5.1f}%"
        if record.status == "completed":
            took = ""
            if record.started_at is not None and record.completed_at is not None:
                took = _ms((record.completed_at - record.started_at).total_seconds())
            detail = "timed out" if record.timed_out else f"{self.sym['arrow']} {_short(record.output, 52)}"
            if record.kind == "delay" or (record.output is None and not record.timed_out):
                detail = "done"
            return f"{head.format(mark=self.sym['done'])} {took:>8}  {detail}  [{pct}]"
        if record.status == "failed":
            error = record.error
            message = f"{error.type}: {error.message}" if error is not None else "failed"
            return f"{head.format(mark=self.sym['fail'])} attempt {record.attempts} failed: {message}"
        return f"{head.format(mark=self.sym['wait'])} {'':>8}  {self._waiting(record, progress)}"

    @staticmethod
    def _percentage(record: StepRecord, progress: Progress) -> float:
        """How far the run was when ``record`` completed: completed steps so far / the static total."""
        done = 0
        for step in progress.timeline.values():
            done += step.status == "completed"
            if step.step_id == record.step_id:
                break
        return min(100.0, 100.0 * done / progress.total_steps) if progress.total_steps else 100.0

    def _waiting(self, record: StepRecord, progress: Progress) -> str:
        if record.kind == "wait_for":
            return f'waiting for the event "{record.event or (progress.waiting and progress.waiting.event)}"'
        if record.kind == "poll":
            return "polling every 200 ms until the profile is verified"
        if record.kind in ("delay", "wait_until"):
            wake = record.wake_at or (progress.waiting.wake_at if progress.waiting else None)
            if wake is not None:
                left = max(0.0, (wake - progress.updated_at).total_seconds())
                return f"sleeping {left:.1f} s (durable timer, no thread held)"
            return "sleeping (durable timer, no thread held)"
        return f"waiting ({record.kind})"


def run_demo(
    dsn: str | None = None,
    *,
    schema: str = "pgflow",
    as_json: bool = False,
    out: TextIO | None = None,
    dsn_resolved: str | None = None,
    deadline: float = 60.0,
) -> Any:
    """Run the onboarding demo end to end; return the final ``WorkflowRun``.

    Prints a readable account of each step to ``out`` (stdout), or nothing when ``as_json`` (the
    caller prints the final run). ``dsn`` is what the user gave (for the banner); ``dsn_resolved``,
    when given, is the connection string actually used (environment or embedded default resolved).
    """
    from .engine import Engine

    out = out if out is not None else sys.stdout
    printer = _Printer(out)
    quiet = as_json
    say: Callable[[str], None] = (lambda _text: None) if quiet else printer.say
    sym = printer.sym

    say(f"pgflow demo {sym['dash']} a durable onboarding workflow, on PostgreSQL")
    say("")
    say(f"  database   {_database_label(dsn)}")
    say(f"  schema     {schema}")
    say(f"  workflow   {DEMO_WORKFLOW_ID}: " + f" {sym['arrow']} ".join(s.id for s in onboarding.steps))
    say("")
    began = time.monotonic()
    with Engine(
        dsn_resolved or dsn, schema=schema, workflows=[onboarding], concurrency=4, min_poll_interval="100ms"
    ) as engine:
        signup = Signup(email="ada@example.com", plan="pro")
        run = engine.start_workflow(onboarding, signup)
        say(f"Started run {run.id} for {signup.email} (plan {signup.plan!r}); a worker thread picks it up:")
        triggered = False
        stop_at = time.monotonic() + deadline
        while True:
            progress = engine.check_progress(run.id)
            if not quiet:
                printer.steps(progress)
            waiting = progress.waiting
            if (
                not triggered
                and progress.status == RunStatus.PAUSED
                and waiting is not None
                and waiting.event == DEMO_EVENT
            ):
                say("")
                say(
                    f"The run is now {progress.status.value}: it holds no thread and no connection while "
                    f"it waits,\nand would survive a restart. Your app would send the event when the user "
                    "clicks the link:"
                )
                say(f'    engine.trigger_event(run_id, "{DEMO_EVENT}", {{"via": "email-link"}})')
                say("")
                engine.trigger_event(run.id, DEMO_EVENT, {"via": "email-link"})
                triggered = True
                continue
            if progress.status in TERMINAL:
                break
            if time.monotonic() > stop_at:
                raise TimeoutError(
                    f"the demo run {run.id} is still {progress.status.value} after {deadline:.0f} s "
                    "(is the database very slow?)"
                )
            time.sleep(0.1)
        final = engine.get_run(run.id)
    elapsed = time.monotonic() - began
    say("")
    if final.status == RunStatus.COMPLETED:
        say(f"Run {final.status.value} in {elapsed:.1f} s ({len(final.timeline)} steps). Output:")
        for line in json.dumps(final.output, indent=2, ensure_ascii=False, sort_keys=True).splitlines():
            say(f"    {line}")
    else:
        error = final.error
        say(f"Run {final.status.value}" + (f": {error.type}: {error.message}" if error else "."))
    options = (" --dsn DSN" if dsn else "") + (f" --schema {schema}" if schema != "pgflow" else "")
    say("")
    say("Next:")
    hints = [
        (f"pgflow show {final.id}{options}", "# the run and its timeline"),
        (f"pgflow runs{options}", "# recent runs, newest first"),
    ]
    width = max(len(command) for command, _ in hints)
    for command, comment in hints:
        say(f"  {command:<{width}}  {comment}")
    return final
