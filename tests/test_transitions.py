"""Table-driven unit tests of ``transitions.py`` (SPEC §3–§5): every run state × every transition.

Pure functions, no store, no clock: each case builds a row in one state with the helpers below (all
at ``NOW``) and states **exactly** what the transition changes — a dict of the fields that differ
from the input row (every field not listed must be left as it was) — or the exact error it raises.
The rules once found contradicting the SPEC are pinned at the end, each naming the bug it was.
"""

from __future__ import annotations

from typing import Any

import attrs
import pendulum
import pytest

from pgflow import transitions as tr
from pgflow.errors import InvalidArgumentError, InvalidStateError
from pgflow.records import RunError, RunStatus, StepRecord, Waiting
from pgflow.store import (
    CompleteRun,
    FailRun,
    KeepRunning,
    Lease,
    NewRun,
    ReleaseRun,
    RetryRun,
    RunOutcome,
    RunRow,
    SuspendRun,
)

DateTime = pendulum.DateTime
PENDING, RUNNING, PAUSED = RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED
COMPLETED, FAILED, CANCELLED = RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED

T0 = pendulum.datetime(2024, 1, 1, tz="UTC")
LEASE = pendulum.duration(seconds=30)


def at(seconds: float) -> DateTime:
    return T0 + pendulum.duration(seconds=seconds)


NOW = at(100)
EARLIER = at(50)  # a time already past
LATER = at(300)  # a timer still ahead
DEADLINE = at(500)  # a workflow timeout still ahead
ERR = RunError("ValueError", "boom", "Traceback ...", "a")

# -- rows in every state (all seen at NOW) ----------------------------------------------------------

BASE = RunRow(id="r1", workflow_id="wf", resource_id=None, status=PENDING, input={"n": 1}, created_at=T0,
              updated_at=T0)  # fmt: skip

WAITS = {
    "wait_for": Waiting("s", "wait_for", "go"),
    "wait_for+timeout": Waiting("s", "wait_for", "go", LATER),
    "delay": Waiting("s", "delay", None, LATER),
    "wait_until": Waiting("s", "wait_until", None, LATER),
    "poll": Waiting("s", "poll", None, LATER),
    "pause": Waiting("s", "pause"),
    "child": Waiting("s", "child"),
}
TIMED = ("wait_for+timeout", "delay", "wait_until", "poll")  # waits with a wake-up time


def pending(**kw: Any) -> RunRow:
    """Just started (or woken): ready since T0, no lease."""
    return attrs.evolve(BASE, **{"due_at": T0, **kw})


def backoff(**kw: Any) -> RunRow:
    """Pending in a run-retry backoff: due at LATER."""
    fields = {"retry_count": 1, "error": ERR, "wake_at": LATER, "due_at": LATER, "lease_token": 1, **kw}
    return attrs.evolve(BASE, **fields)


def running(expires: DateTime = at(120), **kw: Any) -> RunRow:
    """Running: worker w1 holds lease token 1 until ``expires`` (live at NOW by default)."""
    fields = {"status": RUNNING, "lease_owner": "w1", "lease_token": 1, "lease_expires_at": expires,
              "due_at": None, "current_step_id": "a", **kw}  # fmt: skip
    return attrs.evolve(BASE, **fields)


def expired(**kw: Any) -> RunRow:
    """Running, but its worker's lease expired at EARLIER (a crashed worker)."""
    return running(expires=EARLIER, **kw)


def waiting(kind: str, **kw: Any) -> RunRow:
    """Paused (suspended) at a step of ``kind`` (a key of WAITS); due at its wake-up time, if any."""
    w = WAITS[kind]
    times = [t for t in (w.wake_at, kw.get("timeout_at")) if t is not None]
    wake = min(times) if times else None  # as a suspend computes it: the timer, or the timeout if earlier
    fields = {"status": PAUSED, "waiting": w, "wake_at": wake, "due_at": wake, "lease_token": 1,
              "current_step_id": "s", **kw}  # fmt: skip
    return attrs.evolve(BASE, **fields)


def held(row: RunRow) -> RunRow:
    """``row`` after pause_workflow at EARLIER: held, paused, due only at its workflow timeout."""
    return attrs.evolve(row, held=True, status=PAUSED, paused_at=EARLIER, due_at=row.timeout_at)


def ended(status: RunStatus, **kw: Any) -> RunRow:
    """Terminal since EARLIER."""
    fields = {"status": status, "completed_at": EARLIER, "lease_token": 1, "current_step_id": "a", **kw}
    if status == COMPLETED:
        fields.setdefault("output", {"done": True})
    if status == FAILED:
        fields.setdefault("error", ERR)
    return attrs.evolve(BASE, **fields)


def record(kind: str, status: str = "waiting", **kw: Any) -> StepRecord:
    """The record of the step a ``waiting(kind)`` row waits at."""
    w = WAITS[kind]
    fields: dict[str, Any] = {"started_at": T0, "attempts": 1 if w.kind == "child" else 0}
    if w.kind in ("delay", "wait_until", "poll"):
        fields["wake_at"] = w.wake_at
    if w.kind == "wait_for":
        fields.update(event=w.event, timeout_at=w.wake_at)
    if w.kind == "child":
        fields["output"] = {"child_run_id": "k"}
    return StepRecord("s", w.kind, status, **{**fields, **kw})


def changes(before: RunRow, after: RunRow) -> dict[str, Any]:
    """The fields ``after`` changed, with their new values."""
    return {
        f.name: getattr(after, f.name)
        for f in attrs.fields(RunRow)
        if getattr(after, f.name) != getattr(before, f.name)
    }


TERMINALS = [pytest.param(ended(s), id=s.value) for s in (COMPLETED, FAILED, CANCELLED)]


def state_error(action: str, status: str, hint: str = "") -> str:
    return f"cannot {action} run r1 (workflow 'wf'): it is {status}{hint}"


# ================================================================================== deliver_event

BUMP = {"mailbox_seq": 1, "updated_at": NOW}
WOKEN = {"status": PENDING, "waiting": None, "due_at": NOW}  # ready at once


@pytest.mark.parametrize(
    ("row", "event", "expected"),
    [
        pytest.param(pending(), "go", BUMP, id="pending"),
        pytest.param(backoff(), "go", BUMP, id="retry-backoff"),
        pytest.param(running(), "go", BUMP, id="running"),
        pytest.param(expired(), "go", BUMP, id="running-lease-expired"),
        pytest.param(expired(waiting=WAITS["wait_for"]), "go", BUMP, id="running-lease-expired-past-a-wait_for"),
        pytest.param(running(waiting=WAITS["wait_for"]), "go", BUMP, id="running-past-a-wait_for"),
        pytest.param(waiting("wait_for"), "go", BUMP | WOKEN, id="waiting-for-it"),
        pytest.param(waiting("wait_for+timeout"), "go", BUMP | WOKEN | {"wake_at": None}, id="waiting-for-it-with-timeout"),
        pytest.param(waiting("wait_for"), "other", BUMP, id="waiting-for-another-event"),
        *[pytest.param(waiting(k), "go", BUMP, id=f"waiting-at-{k}") for k in ("delay", "wait_until", "poll", "pause", "child")],
        pytest.param(held(waiting("wait_for")), "go", BUMP, id="held-waiting-for-it"),
        pytest.param(attrs.evolve(BASE, status=PAUSED), "go", BUMP, id="paused-waiting-for-nothing"),
        pytest.param(held(pending()), "go", BUMP, id="held-pending"),
        pytest.param(held(running()), "go", BUMP, id="held-running"),
    ],
)  # fmt: skip
def test_deliver_event(row: RunRow, event: str, expected: dict[str, Any]) -> None:
    """An event is counted in mailbox_seq; it wakes only an unheld run waiting for that very event."""
    assert changes(row, tr.deliver_event(row, event, NOW)) == expected


@pytest.mark.parametrize("row", TERMINALS)
def test_deliver_event_to_an_ended_run_is_refused(row: RunRow) -> None:
    """Terminal runs take no events (InvalidStateError naming run, workflow, event and status)."""
    with pytest.raises(InvalidStateError) as info:
        tr.deliver_event(row, "go", NOW)
    assert str(info.value) == state_error("deliver event 'go' to", row.status.value)


def test_deliver_event_counts_on_from_the_current_mailbox_seq() -> None:
    """mailbox_seq goes up by one per event, from wherever it is."""
    assert tr.deliver_event(pending(mailbox_seq=4), "go", NOW).mailbox_seq == 5


# ========================================================================================== pause

HOLD = {"held": True, "paused_at": NOW, "updated_at": NOW}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(pending(), HOLD | {"status": PAUSED, "due_at": None}, id="pending"),
        pytest.param(pending(timeout_at=DEADLINE), HOLD | {"status": PAUSED, "due_at": DEADLINE}, id="pending-with-timeout"),
        pytest.param(backoff(), HOLD | {"status": PAUSED, "due_at": None}, id="retry-backoff"),
        pytest.param(running(), HOLD | {"status": PAUSED}, id="running"),
        pytest.param(running(timeout_at=DEADLINE), HOLD | {"status": PAUSED, "due_at": DEADLINE}, id="running-with-timeout"),
        pytest.param(expired(), HOLD | {"status": PAUSED}, id="running-lease-expired"),
        *[pytest.param(waiting(k), HOLD | {"due_at": None}, id=f"waiting-at-{k}") for k in TIMED],
        *[pytest.param(waiting(k), HOLD, id=f"waiting-at-{k}") for k in ("wait_for", "pause", "child")],
        pytest.param(waiting("delay", timeout_at=DEADLINE), HOLD | {"due_at": DEADLINE}, id="waiting-at-delay-with-timeout"),
    ],
)  # fmt: skip
def test_pause(row: RunRow, expected: dict[str, Any]) -> None:
    """pause holds any live run: paused, held, due only at its workflow timeout; lease, waiting and
    timers are kept (a worker holding the lease finishes its step)."""
    assert changes(row, tr.pause(row, NOW)) == expected


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(held(pending()), state_error("pause", "paused and held", " already"), id="held-pending"),
        pytest.param(held(waiting("delay")), state_error("pause", "paused and held", " already"), id="held-waiting"),
        pytest.param(held(running()), state_error("pause", "paused and held", " already"), id="held-running"),
        *[pytest.param(ended(s), state_error("pause", s.value), id=s.value) for s in (COMPLETED, FAILED, CANCELLED)],
    ],
)  # fmt: skip
def test_pause_refused(row: RunRow, message: str) -> None:
    """An already held or an ended run cannot be paused."""
    with pytest.raises(InvalidStateError) as info:
        tr.pause(row, NOW)
    assert str(info.value) == message


# ========================================================================================= resume

RESUMED = {"held": False, "resumed_at": NOW, "updated_at": NOW}
RELEASED = {"lease_owner": None, "lease_expires_at": None}
PAUSE_DONE = record("pause", "completed", completed_at=NOW)


@pytest.mark.parametrize(
    ("row", "step", "event_ready", "expected", "step_after"),
    [
        pytest.param(held(pending()), None, False, RESUMED | {"status": PENDING, "due_at": NOW}, None, id="held-pending"),
        pytest.param(held(backoff()), None, False, RESUMED | {"status": PENDING, "due_at": LATER}, None, id="held-in-backoff"),
        pytest.param(held(backoff(timeout_at=at(200))), None, False, RESUMED | {"status": PENDING}, None,
                     id="held-in-backoff-timeout-first"),
        pytest.param(held(backoff(wake_at=EARLIER)), None, False, RESUMED | {"status": PENDING, "wake_at": None, "due_at": NOW},
                     None, id="held-backoff-over"),
        pytest.param(held(backoff(wake_at=NOW)), None, False, RESUMED | {"status": PENDING, "wake_at": None, "due_at": NOW},
                     None, id="held-backoff-over-exactly-now"),
        pytest.param(held(running()), None, False, RESUMED | {"status": RUNNING}, None, id="held-running"),
        pytest.param(held(running(timeout_at=DEADLINE)), None, False, RESUMED | {"status": RUNNING, "due_at": None}, None,
                     id="held-running-with-timeout-not-due-while-leased"),
        pytest.param(held(expired()), None, False, RESUMED | RELEASED | {"status": PENDING, "due_at": NOW}, None,
                     id="held-running-lease-expired"),
        *[pytest.param(held(waiting(k)), record(k), False, RESUMED | {"due_at": LATER}, None, id=f"held-at-{k}") for k in TIMED],
        pytest.param(held(waiting("delay", timeout_at=at(200))), record("delay"), False, RESUMED, None,
                     id="held-at-delay-timeout-first"),
        pytest.param(held(waiting("delay", timeout_at=DEADLINE)), record("delay"), False, RESUMED | {"due_at": LATER}, None,
                     id="held-at-delay-timer-first"),
        pytest.param(held(waiting("delay", wake_at=DEADLINE)), record("delay"), False,
                     RESUMED | {"wake_at": LATER, "due_at": LATER}, None, id="held-at-delay-the-step-wakes-first"),
        pytest.param(held(waiting("delay", timeout_at=at(200), wake_at=LATER)), record("delay"), False,
                     RESUMED | {"wake_at": at(200)}, None, id="held-at-delay-the-run-times-out-first"),
        pytest.param(held(waiting("delay", waiting=Waiting("s", "delay", None, EARLIER), wake_at=EARLIER)), record("delay"),
                     False, RESUMED | {"status": PENDING, "waiting": None, "wake_at": None, "due_at": NOW}, None,
                     id="held-at-delay-that-fired-meanwhile"),
        pytest.param(held(waiting("delay", waiting=Waiting("s", "delay", None, NOW), wake_at=NOW)), record("delay"),
                     False, RESUMED | {"status": PENDING, "waiting": None, "wake_at": None, "due_at": NOW}, None,
                     id="held-at-delay-firing-exactly-now"),
        pytest.param(held(waiting("wait_for")), record("wait_for"), False, RESUMED, None, id="held-at-wait_for"),
        pytest.param(held(waiting("wait_for", timeout_at=DEADLINE)), record("wait_for"), False, RESUMED, None,
                     id="held-at-wait_for-with-run-timeout"),
        pytest.param(held(waiting("wait_for")), record("wait_for"), True, RESUMED | WOKEN, None, id="held-at-wait_for-event-buffered"),
        pytest.param(held(waiting("child")), record("child"), False, RESUMED, None, id="held-at-child"),
        pytest.param(held(waiting("pause")), record("pause"), False, RESUMED | WOKEN, PAUSE_DONE, id="held-at-pause"),
        pytest.param(waiting("pause"), record("pause"), False, {"resumed_at": NOW, "updated_at": NOW} | WOKEN, PAUSE_DONE,
                     id="at-pause"),
        pytest.param(waiting("pause"), None, False, {"resumed_at": NOW, "updated_at": NOW} | WOKEN, None,
                     id="at-pause-without-record"),
        pytest.param(expired(waiting=WAITS["pause"]), record("pause"), False,
                     {"resumed_at": NOW, "updated_at": NOW, "status": PENDING, "waiting": None, "due_at": NOW} | RELEASED,
                     PAUSE_DONE, id="at-pause-lease-expired"),
    ],
)  # fmt: skip
def test_resume(
    row: RunRow,
    step: StepRecord | None,
    event_ready: bool,
    expected: dict[str, Any],
    step_after: StepRecord | None,
) -> None:
    """resume releases the hold and/or completes the Pause step; the run then continues, or keeps
    waiting at its step (due at its timer or workflow timeout, whichever comes first)."""
    after, done = tr.resume(row, step, event_ready, NOW)
    assert changes(row, after) == expected
    assert done == step_after


@pytest.mark.parametrize(
    ("row", "names", "expected"),
    [
        pytest.param(waiting("wait_for"), set(), {}, id="nothing-returned"),
        pytest.param(waiting("wait_for"), {"go"}, BUMP | WOKEN, id="waiting-for-a-returned-event"),
        pytest.param(waiting("wait_for+timeout"), {"go", "other"}, BUMP | WOKEN | {"wake_at": None},
                     id="waiting-for-one-of-them-with-timeout"),
        pytest.param(waiting("wait_for"), {"other"}, BUMP, id="waiting-for-another-event"),
        pytest.param(held(waiting("wait_for")), {"go"}, BUMP, id="held-waiting-for-it"),
        pytest.param(running(), {"go"}, BUMP, id="running"),
        pytest.param(expired(waiting=WAITS["wait_for"]), {"go"}, BUMP, id="running-lease-expired-past-a-wait_for"),
        pytest.param(waiting("delay"), {"go"}, BUMP, id="waiting-at-a-delay"),
    ],
)  # fmt: skip
def test_events_returned(row: RunRow, names: set[str], expected: dict[str, Any]) -> None:
    """Events a deleted WaitFor record had taken count as delivered again: mailbox_seq moves (a worker
    holding the run looks again before it suspends) and an unheld run waiting for one of them wakes."""
    assert changes(row, tr.events_returned(row, names, NOW)) == expected


NOT_HELD_HINT = (
    "; resume_workflow only releases a run held by pause_workflow or waiting at a Pause step — "
    "use trigger_event to deliver an event or fast_forward_workflow to skip a wait"
)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(pending(), state_error("resume", "pending", NOT_HELD_HINT), id="pending"),
        pytest.param(backoff(), state_error("resume", "pending", NOT_HELD_HINT), id="retry-backoff"),
        pytest.param(running(), state_error("resume", "running", NOT_HELD_HINT), id="running"),
        pytest.param(expired(), state_error("resume", "running", NOT_HELD_HINT), id="running-lease-expired"),
        *[pytest.param(waiting(k), state_error("resume", "paused", NOT_HELD_HINT), id=f"waiting-at-{k}")
          for k in ("wait_for", "wait_for+timeout", "delay", "wait_until", "poll", "child")],
        pytest.param(running(waiting=WAITS["pause"]), state_error("resume", "running", NOT_HELD_HINT),
                     id="running-past-a-pause-lease-live"),
        *[pytest.param(ended(s), state_error("resume", s.value), id=s.value) for s in (COMPLETED, FAILED, CANCELLED)],
    ],
)  # fmt: skip
def test_resume_refused(row: RunRow, message: str) -> None:
    """A run neither held nor at a Pause cannot be resumed (the message points to trigger_event and
    fast_forward_workflow); an ended run cannot either."""
    with pytest.raises(InvalidStateError) as info:
        tr.resume(row, None, True, NOW)
    assert str(info.value) == message


# ========================================================================================= cancel

CANCEL = {"status": CANCELLED, "completed_at": NOW, "updated_at": NOW}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(pending(), CANCEL | {"due_at": None}, id="pending"),
        pytest.param(backoff(), CANCEL | {"due_at": None, "wake_at": None}, id="retry-backoff"),
        pytest.param(running(), CANCEL | RELEASED, id="running"),
        pytest.param(expired(), CANCEL | RELEASED, id="running-lease-expired"),
        *[pytest.param(waiting(k), CANCEL | {"due_at": None, "wake_at": None}, id=f"waiting-at-{k}") for k in TIMED],
        *[pytest.param(waiting(k), CANCEL, id=f"waiting-at-{k}") for k in ("wait_for", "pause", "child")],
        pytest.param(held(pending()), CANCEL | {"held": False}, id="held-pending"),
        pytest.param(held(pending(timeout_at=DEADLINE)), CANCEL | {"held": False, "due_at": None}, id="held-with-timeout"),
        pytest.param(held(waiting("delay")), CANCEL | {"held": False, "wake_at": None}, id="held-waiting"),
        pytest.param(held(running()), CANCEL | RELEASED | {"held": False}, id="held-running"),
    ],
)  # fmt: skip
def test_cancel(row: RunRow, expected: dict[str, Any]) -> None:
    """cancel ends any live run at once: no lease, no timer, not due, not held.
    (Whether ``waiting`` is cleared too is pinned by test_cancel_clears_waiting below.)"""
    found = changes(row, tr.cancel(row, NOW))
    found.pop("waiting", None)
    assert found == expected


@pytest.mark.parametrize("row", TERMINALS)
def test_cancel_refused_on_an_ended_run(row: RunRow) -> None:
    """An ended run cannot be cancelled (so of two concurrent cancels exactly one succeeds)."""
    with pytest.raises(InvalidStateError) as info:
        tr.cancel(row, NOW)
    assert str(info.value) == state_error("cancel", row.status.value)


# =================================================================================== fast_forward

READY = {"status": PENDING, "waiting": None, "due_at": NOW, "updated_at": NOW}


def completed(kind: str, output: Any) -> StepRecord:
    return record(kind, "completed", output=output, completed_at=NOW, wake_at=None)


@pytest.mark.parametrize(
    ("kind", "data", "output"),
    [
        ("wait_for", {"x": 1}, {"x": 1}),
        ("wait_for", None, {}),
        ("wait_for+timeout", {"x": 1}, {"x": 1}),
        ("delay", {"x": 1}, None),
        ("wait_until", {"x": 1}, None),
        ("pause", {"x": 1}, None),
        ("poll", [1, 2], [1, 2]),
        ("poll", None, {}),
        ("child", {"x": 1}, {"x": 1}),
        ("child", None, {}),
    ],
)
def test_fast_forward_completes_the_waiting_step(kind: str, data: Any, output: Any) -> None:
    """fast_forward completes the step a run waits at (WaitFor/Poll/Child get ``data``, default {};
    timers and Pause get None) and makes the run ready at once."""
    row = waiting(kind)
    after, done = tr.fast_forward(row, record(kind), data, NOW)
    wake = {"wake_at": None} if row.wake_at is not None else {}
    assert changes(row, after) == READY | wake
    assert done == completed(kind, output)


@pytest.mark.parametrize(
    ("row", "step", "expected", "step_after"),
    [
        pytest.param(held(pending()), None, RESUMED | {"status": PENDING, "due_at": NOW}, None, id="held-pending"),
        pytest.param(held(backoff()), None, RESUMED | {"status": PENDING, "due_at": LATER}, None, id="held-in-backoff"),
        pytest.param(held(running()), None, RESUMED | {"status": RUNNING}, None, id="held-running"),
        pytest.param(held(expired()), None, RESUMED | RELEASED | {"status": PENDING, "due_at": NOW}, None,
                     id="held-running-lease-expired"),
        pytest.param(held(waiting("delay")), record("delay"), RESUMED | READY | {"wake_at": None}, completed("delay", None),
                     id="held-at-delay"),
        pytest.param(held(waiting("wait_for")), record("wait_for"), RESUMED | READY, completed("wait_for", {"ff": 1}),
                     id="held-at-wait_for"),
        pytest.param(held(waiting("pause")), record("pause"), RESUMED | READY, completed("pause", None), id="held-at-pause"),
    ],
)  # fmt: skip
def test_fast_forward_releases_a_held_run(
    row: RunRow, step: StepRecord | None, expected: dict[str, Any], step_after: StepRecord | None
) -> None:
    """fast_forward on a held run releases it too (also one still pending), and completes its wait."""
    after, done = tr.fast_forward(row, step, {"ff": 1}, NOW)
    assert changes(row, after) == expected
    assert done == step_after


@pytest.mark.parametrize(
    ("row", "step"),
    [
        pytest.param(pending(), None, id="pending"),
        pytest.param(backoff(), None, id="retry-backoff"),
        pytest.param(running(), None, id="running"),
        pytest.param(expired(), None, id="running-lease-expired"),
        pytest.param(running(waiting=WAITS["delay"]), record("delay", "completed"), id="running-past-a-delay-lease-live"),
        *[pytest.param(ended(s), None, id=s.value) for s in (COMPLETED, FAILED, CANCELLED)],
        pytest.param(ended(CANCELLED, waiting=WAITS["wait_for"]), record("wait_for"), id="cancelled-while-waiting"),
        pytest.param(ended(COMPLETED, waiting=WAITS["pause"]), record("pause"), id="completed-with-a-waiting-record"),
    ],
)  # fmt: skip
def test_fast_forward_leaves_other_runs_unchanged(row: RunRow, step: StepRecord | None) -> None:
    """A run neither waiting nor held, or ended (a cancelled run stays cancelled), is returned as is."""
    assert tr.fast_forward(row, step, {"ff": 1}, NOW) == (row, None)


@pytest.mark.parametrize("kind", ["wait_for", "delay", "child"])
def test_fast_forward_never_rewrites_a_completed_record(kind: str) -> None:
    """A waiting step whose record is already completed (a timer fired, a child ended) keeps its record."""
    row = waiting(kind)
    _, done = tr.fast_forward(
        row, record(kind, "completed", output="kept", completed_at=EARLIER), {"ff": 1}, NOW
    )
    assert done is None


# ========================================================================================== claim

CLAIMED = {"lease_owner": "w2", "lease_token": 2, "lease_expires_at": NOW + LEASE, "updated_at": NOW}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(pending(), CLAIMED | {"status": RUNNING, "due_at": None, "lease_token": 1}, id="pending"),
        pytest.param(backoff(due_at=EARLIER), CLAIMED | {"status": RUNNING, "due_at": None, "wake_at": None},
                     id="backoff-over"),
        pytest.param(expired(), CLAIMED, id="running-lease-expired"),
        pytest.param(held(pending(timeout_at=NOW)), CLAIMED | {"due_at": None, "lease_token": 1}, id="held-at-its-timeout"),
        pytest.param(held(pending(timeout_at=NOW, parked="workflow")), CLAIMED | {"due_at": None, "lease_token": 1, "parked": None},
                     id="held-parked-at-its-timeout"),
        pytest.param(held(expired()), CLAIMED, id="held-running-lease-expired"),
        pytest.param(waiting("delay", due_at=EARLIER),
                     CLAIMED | {"status": RUNNING, "due_at": None, "waiting": None, "wake_at": None},
                     id="waiting-timer-due"),
    ],
)  # fmt: skip
def test_claim(row: RunRow, expected: dict[str, Any]) -> None:
    """A claim takes a new lease (token + 1, expiring NOW + lease): the run is running (no longer
    waiting, nothing due), or stays paused as it was when held (the worker will only give it back)."""
    assert changes(row, tr.claim(row, "w2", NOW, LEASE)) == expected


# ==================================================================================== claim_order


def test_claim_order_takes_over_expired_leases_first_then_the_earliest_due() -> None:
    """Workers claim runs whose lease expired first (oldest expiry first, whenever they were
    created), then the earliest due, then the oldest created, then by id; a run created first but
    due later waits its turn."""
    rows = {
        "due-late-created-first": pending(id="due-late-created-first", created_at=T0, due_at=at(90)),
        "due-early-created-last": pending(id="due-early-created-last", created_at=at(60), due_at=at(10)),
        "due-early-b": pending(id="due-early-b", created_at=at(5), due_at=at(10)),
        "due-early-a": pending(id="due-early-a", created_at=at(5), due_at=at(10)),
        "lease-expired-late": expired(id="lease-expired-late", lease_expires_at=at(80)),
        "lease-expired-early": expired(id="lease-expired-early", created_at=at(30), lease_expires_at=at(20)),
    }
    order = sorted(rows.values(), key=lambda r: tr.claim_order(r, NOW))
    assert [r.id for r in order] == [
        "lease-expired-early", "lease-expired-late", "due-early-a", "due-early-b", "due-early-created-last",
        "due-late-created-first",
    ]  # fmt: skip


# ==================================================================================== check_lease

LIVE = Lease("r1", "w1", 1)


@pytest.mark.parametrize(
    ("row", "lease"),
    [
        pytest.param(running(), LIVE, id="own-live-lease"),
        pytest.param(running(expires=NOW.add(microseconds=1)), LIVE, id="expiring-right-after-now"),
        pytest.param(held(running()), LIVE, id="held-while-running"),
    ],
)
def test_check_lease_accepts(row: RunRow, lease: Lease) -> None:
    """The holder of the current, unexpired lease may write (check_lease returns without raising)."""
    tr.check_lease(row, lease, NOW)
    tr.check_lease(row, lease, NOW.subtract(seconds=10))  # earlier still fine


@pytest.mark.parametrize(
    ("row", "lease"),
    [
        pytest.param(running(), Lease("r1", "w1", 2), id="newer-token"),
        pytest.param(running(lease_token=2), LIVE, id="taken-over"),
        pytest.param(running(), Lease("r1", "w2", 1), id="other-owner"),
        pytest.param(running(expires=NOW), LIVE, id="expiring-exactly-now"),
        pytest.param(expired(), LIVE, id="expired"),
        pytest.param(running(lease_expires_at=None), LIVE, id="no-expiry"),
        pytest.param(attrs.evolve(running(), lease_owner=None), LIVE, id="released"),
        *[
            pytest.param(attrs.evolve(running(), status=s), LIVE, id=s.value)
            for s in (COMPLETED, FAILED, CANCELLED)
        ],
    ],
)
def test_check_lease_refuses(row: RunRow, lease: Lease) -> None:
    """A stale token, another owner, an expiry at or before now, or an ended run: LeaseLost (naming the run)."""
    with pytest.raises(tr.LeaseLost) as info:
        tr.check_lease(row, lease, NOW)
    assert info.value.args == ("r1",)


# ================================================================================== apply_outcome

DELAY_W = WAITS["delay"]
EVENT_W = WAITS["wait_for"]
LET_GO = RELEASED | {"updated_at": NOW, "current_step_id": "b"}  # what every outcome but KeepRunning does
ERR2 = RunError("KeyError", "'k'", None, "b")


@pytest.mark.parametrize(
    ("row", "outcome", "expected"),
    [
        pytest.param(running(at(122)), KeepRunning(), {"lease_expires_at": NOW + LEASE, "updated_at": NOW, "current_step_id": "b"},
                     id="keep-running-renews-a-lease-under-three-quarters"),
        pytest.param(running(at(122.5)), KeepRunning(), {"updated_at": NOW, "current_step_id": "b"},
                     id="keep-running-keeps-a-lease-with-three-quarters-left"),
        pytest.param(held(running(at(122))), KeepRunning(), {"lease_expires_at": NOW + LEASE, "updated_at": NOW, "current_step_id": "b"},
                     id="keep-running-held"),
        pytest.param(running(), SuspendRun(DELAY_W, LATER, 0),
                     LET_GO | {"status": PAUSED, "waiting": DELAY_W, "wake_at": LATER, "due_at": LATER}, id="suspend-at-timer"),
        pytest.param(running(), SuspendRun(EVENT_W, None, 0), LET_GO | {"status": PAUSED, "waiting": EVENT_W},
                     id="suspend-for-event"),
        pytest.param(running(timeout_at=DEADLINE), SuspendRun(EVENT_W, None, 0),
                     LET_GO | {"status": PAUSED, "waiting": EVENT_W, "wake_at": DEADLINE, "due_at": DEADLINE},
                     id="suspend-for-event-until-timeout"),
        pytest.param(running(timeout_at=at(200)), SuspendRun(DELAY_W, LATER, 0),
                     LET_GO | {"status": PAUSED, "waiting": DELAY_W, "wake_at": at(200), "due_at": at(200)},
                     id="suspend-timeout-before-timer"),
        pytest.param(running(timeout_at=DEADLINE), SuspendRun(DELAY_W, LATER, 0),
                     LET_GO | {"status": PAUSED, "waiting": DELAY_W, "wake_at": LATER, "due_at": LATER},
                     id="suspend-timer-before-timeout"),
        pytest.param(running(), SuspendRun(None, at(150), 0), LET_GO | {"status": PENDING, "wake_at": at(150), "due_at": at(150)},
                     id="suspend-for-step-retry-backoff"),
        pytest.param(held(running()), SuspendRun(DELAY_W, LATER, 0), LET_GO | {"waiting": DELAY_W, "wake_at": LATER},
                     id="suspend-held"),
        pytest.param(held(running(timeout_at=DEADLINE)), SuspendRun(None, at(150), 0), LET_GO | {"wake_at": at(150)},
                     id="suspend-held-in-step-backoff"),
        pytest.param(running(mailbox_seq=3), SuspendRun(EVENT_W, None, 3), LET_GO | {"status": PAUSED, "waiting": EVENT_W},
                     id="suspend-mailbox-unchanged"),
        pytest.param(running(error=ERR, retry_count=1), CompleteRun({"ok": 1}),
                     LET_GO | {"status": COMPLETED, "output": {"ok": 1}, "error": None, "completed_at": NOW}, id="complete"),
        pytest.param(held(running(waiting=EVENT_W, wake_at=LATER)), CompleteRun(None),
                     LET_GO | {"status": COMPLETED, "completed_at": NOW, "held": False, "waiting": None, "wake_at": None},
                     id="complete-held"),
        pytest.param(running(), FailRun(ERR2), LET_GO | {"status": FAILED, "error": ERR2, "completed_at": NOW}, id="fail"),
        pytest.param(held(running(timeout_at=DEADLINE, waiting=DELAY_W, wake_at=LATER)), FailRun(ERR2),
                     LET_GO | {"status": FAILED, "error": ERR2, "completed_at": NOW, "held": False, "waiting": None,
                               "wake_at": None, "due_at": None}, id="fail-held"),
        pytest.param(running(), RetryRun(ERR2, at(150)),
                     LET_GO | {"status": PENDING, "retry_count": 1, "error": ERR2, "wake_at": at(150), "due_at": at(150)},
                     id="retry"),
        pytest.param(running(timeout_at=at(120), retry_count=1, waiting=DELAY_W), RetryRun(ERR2, at(150)),
                     LET_GO | {"status": PENDING, "retry_count": 2, "error": ERR2, "wake_at": at(150), "due_at": at(120),
                               "waiting": None}, id="retry-timeout-first"),
        pytest.param(held(running()), RetryRun(ERR2, at(150)),
                     LET_GO | {"retry_count": 1, "error": ERR2, "wake_at": at(150)}, id="retry-held"),
        pytest.param(running(), ReleaseRun(), LET_GO | {"status": PENDING, "due_at": NOW}, id="release"),
        pytest.param(held(running()), ReleaseRun(), LET_GO, id="release-held"),
        pytest.param(held(running(timeout_at=DEADLINE)), ReleaseRun(), LET_GO, id="release-held-due-at-timeout"),
        pytest.param(attrs.evolve(held(running(timeout_at=DEADLINE)), due_at=None), ReleaseRun(),
                     LET_GO | {"due_at": DEADLINE}, id="release-held-claimed-due-again-at-timeout"),
        pytest.param(attrs.evolve(held(waiting("delay")), lease_owner="w1", lease_expires_at=at(120), due_at=None),
                     ReleaseRun(), LET_GO, id="release-held-claimed-at-a-step-keeps-waiting-there"),
        pytest.param(running(waiting=DELAY_W, wake_at=LATER), ReleaseRun(), LET_GO | {"status": PAUSED, "due_at": LATER},
                     id="release-resumed-while-claimed-held-waits-again-at-its-step"),
    ],
)  # fmt: skip
def test_apply_outcome(row: RunRow, outcome: RunOutcome, expected: dict[str, Any]) -> None:
    """What each worker outcome makes of a leased run (SPEC §3, §5): wake-ups are the earlier of the
    step's timer and the workflow timeout; a held run is due only at its timeout."""
    assert changes(row, tr.apply_outcome(row, outcome, NOW, LEASE, "b")) == expected


@pytest.mark.parametrize(
    "outcome", [KeepRunning(), SuspendRun(DELAY_W, LATER, 0), CompleteRun(1), FailRun(ERR2), RetryRun(ERR2, LATER), ReleaseRun()]
)  # fmt: skip
def test_apply_outcome_without_a_step_keeps_the_current_step(outcome: RunOutcome) -> None:
    """A batch without step records leaves current_step_id as it was."""
    assert tr.apply_outcome(running(), outcome, NOW, LEASE, None).current_step_id == "a"


@pytest.mark.parametrize(
    ("expires", "renewed"),
    [(None, NOW + LEASE), (EARLIER, NOW + LEASE), (at(122.499999), NOW + LEASE), (at(122.5), at(122.5)), (LATER, LATER)],
)  # fmt: skip
def test_a_step_commit_renews_the_lease_only_below_three_quarters(
    expires: DateTime | None, renewed: DateTime
) -> None:
    """A step's commit renews the lease (to now + lease) only when less than RENEW_BELOW of it is left,
    so the run's row keeps its indexed columns on nearly every step (heartbeats keep more)."""
    assert tr.renew_floor(NOW, LEASE) == at(122.5)
    assert tr.renewed_lease(expires, NOW, LEASE) == renewed


@pytest.mark.parametrize(("loaded", "now"), [(0, 1), (2, 3), (3, 2)])
def test_suspend_refused_when_the_mailbox_changed(loaded: int, now: int) -> None:
    """A suspend based on a mailbox older (or other) than the run's is refused with MailboxChanged."""
    with pytest.raises(tr.MailboxChanged) as info:
        tr.apply_outcome(running(mailbox_seq=now), SuspendRun(EVENT_W, None, loaded), NOW, LEASE, "b")
    assert info.value.args == ("r1",)


# =================================================================================== is_claimable


@pytest.mark.parametrize(
    ("row", "claimable"),
    [
        pytest.param(pending(), True, id="pending"),
        pytest.param(pending(due_at=NOW), True, id="due-exactly-now"),
        pytest.param(pending(due_at=NOW.add(microseconds=1)), False, id="due-just-after-now"),
        pytest.param(backoff(), False, id="in-retry-backoff"),
        pytest.param(running(), False, id="running"),
        pytest.param(running(expires=NOW), True, id="lease-expiring-exactly-now"),
        pytest.param(expired(), True, id="running-lease-expired"),
        pytest.param(running(due_at=EARLIER), False, id="running-live-lease-even-if-due"),
        *[pytest.param(waiting(k), False, id=f"waiting-at-{k}") for k in WAITS],
        pytest.param(waiting("delay", due_at=NOW), True, id="timer-due"),
        pytest.param(held(pending()), False, id="held"),
        pytest.param(held(pending(timeout_at=NOW)), True, id="held-at-its-timeout"),
        pytest.param(held(running()), False, id="held-running"),
        pytest.param(held(expired()), True, id="held-running-lease-expired"),
        pytest.param(attrs.evolve(held(expired()), due_at=LATER), True, id="held-lease-expired-timeout-ahead"),
        *[pytest.param(ended(s, due_at=EARLIER), False, id=f"{s.value}-with-due-time") for s in (COMPLETED, FAILED, CANCELLED)],
        *[pytest.param(ended(s, lease_owner="w1", lease_expires_at=EARLIER), False, id=f"{s.value}-with-old-lease")
          for s in (COMPLETED, FAILED, CANCELLED)],
    ],
)  # fmt: skip
def test_is_claimable(row: RunRow, claimable: bool) -> None:
    """Claimable: live, and either due (no lease) or leased with an expired lease."""
    assert tr.is_claimable(row, NOW) is claimable


@pytest.mark.parametrize(
    ("row", "active"),
    [(running(), True), (running(expires=NOW), False), (expired(), False), (pending(), False),
     (attrs.evolve(running(), lease_owner=None), False), (running(lease_expires_at=None), False)],
)  # fmt: skip
def test_lease_active(row: RunRow, active: bool) -> None:
    """A lease is active while it has an owner and expires strictly after now."""
    assert tr.lease_active(row, NOW) is active


# ================================================================================= child_finished

CHILD_WAIT = record("child")


def child(status: RunStatus, **kw: Any) -> RunRow:
    return attrs.evolve(
        ended(status, **kw), id="k", workflow_id="kid", parent_run_id="r1", parent_step_id="s"
    )


def child_failure(message: str) -> StepRecord:
    return attrs.evolve(CHILD_WAIT, status="failed", error=RunError("ChildFailedError", message, None, "s"),
                        completed_at=NOW, attempts=1)  # fmt: skip


@pytest.mark.parametrize(
    ("kid", "step_after"),
    [
        pytest.param(child(COMPLETED, output={"v": 7}),
                     attrs.evolve(CHILD_WAIT, status="completed", output={"v": 7}, completed_at=NOW), id="completed"),
        pytest.param(child(FAILED), child_failure("child run k (workflow 'kid') failed: ValueError: boom"), id="failed"),
        pytest.param(child(CANCELLED), child_failure("child run k (workflow 'kid') cancelled"), id="cancelled"),
    ],
)  # fmt: skip
def test_child_finished_settles_the_step_and_wakes_the_parent(kid: RunRow, step_after: StepRecord) -> None:
    """A child's end settles its parent's Child step (its output, or ChildFailedError naming the child
    and its error) and makes the waiting parent ready."""
    parent = waiting("child")
    after, done = tr.child_finished(parent, CHILD_WAIT, kid, NOW)
    assert done == step_after
    assert changes(parent, after) == READY


@pytest.mark.parametrize(
    "parent",
    [
        pytest.param(waiting("wait_for", waiting=Waiting("w", "wait_for", "go")), id="parent-waiting-elsewhere"),
        pytest.param(pending(), id="parent-pending"),
        *[pytest.param(ended(s, waiting=WAITS["child"]), id=f"parent-{s.value}") for s in (COMPLETED, FAILED, CANCELLED)],
    ],
)  # fmt: skip
def test_child_finished_leaves_a_parent_not_waiting_for_it_alone(parent: RunRow) -> None:
    """A parent not waiting at that Child step (or ended) is unchanged; the step is still settled."""
    after, done = tr.child_finished(parent, CHILD_WAIT, child(COMPLETED, output=1), NOW)
    assert after == parent
    assert done.status == "completed" and done.output == 1


@pytest.mark.parametrize(
    "parent",
    [pytest.param(running(), id="running"), pytest.param(held(running()), id="held-running"),
     pytest.param(expired(), id="running-lease-expired")],
)  # fmt: skip
def test_child_finished_makes_a_worker_holding_the_parent_look_again(parent: RunRow) -> None:
    """A child ending while a worker holds its parent bumps the parent's mailbox_seq (and updated_at)
    and nothing else, so that worker's suspend is refused and it replays the settled step."""
    after, done = tr.child_finished(parent, CHILD_WAIT, child(COMPLETED, output=1), NOW)
    assert changes(parent, after) == {"mailbox_seq": 1, "updated_at": NOW}
    assert done.status == "completed" and done.output == 1


def test_a_failed_child_keeps_the_attempts_of_its_child_step() -> None:
    """SPEC §13: ``attempts`` counts on after a takeover; a child's end does not reset it, whether
    the child completed or failed."""
    started_twice = attrs.evolve(CHILD_WAIT, attempts=2)
    _, after_completion = tr.child_finished(waiting("child"), started_twice, child(COMPLETED), NOW)
    _, after_failure = tr.child_finished(waiting("child"), started_twice, child(FAILED), NOW)
    assert (after_completion.attempts, after_failure.attempts) == (2, 2)


def test_child_finished_keeps_a_held_parent_held() -> None:
    """A held parent stays held (due only at its timeout) when its child ends."""
    parent = held(waiting("child", timeout_at=DEADLINE))
    after, _ = tr.child_finished(parent, CHILD_WAIT, child(COMPLETED), NOW)
    assert after.status == PAUSED and after.held and after.due_at == DEADLINE and after.updated_at == NOW


# ============================================================================== the smaller pieces


@pytest.mark.parametrize(
    ("row", "names", "matches"),
    [
        (waiting("wait_for"), {"go"}, True),
        (waiting("wait_for"), {"other", "go"}, True),
        (waiting("wait_for"), {"other"}, False),
        (waiting("wait_for"), set(), False),
        (held(waiting("wait_for")), {"go"}, True),
        (waiting("delay"), {"go"}, False),
        (waiting("pause"), {"go"}, False),
        (pending(), {"go"}, False),
    ],
)
def test_event_matches(row: RunRow, names: set[str], matches: bool) -> None:
    """A buffered event matches only a run waiting at a WaitFor for that name."""
    assert tr.event_matches(row, names) is matches


def test_new_row_is_pending_and_due_at_once() -> None:
    """A new run is pending, due at its creation, with nothing else set beyond what it was given."""
    new = NewRun(
        "r1", "wf", "u1", {"n": 1}, 2, 0.5, "key", DEADLINE, T0, parent_run_id="p", parent_step_id="c"
    )
    assert tr.new_row(new) == attrs.evolve(
        BASE, resource_id="u1", max_retries=2, retry_backoff=0.5, idempotency_key="key", timeout_at=DEADLINE,
        due_at=T0, parent_run_id="p", parent_step_id="c",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("pause", (tr.pause(pending(), NOW), None)),
        ("cancel", (tr.cancel(pending(), NOW), None)),
        ("resume", tr.resume(waiting("pause"), record("pause"), False, NOW)),
        ("fast_forward", tr.fast_forward(waiting("wait_for"), record("wait_for"), {"ff": 1}, NOW)),
    ],
)
def test_apply_change_dispatches_each_client_action(action: str, expected: Any) -> None:
    """apply_change runs the named client action with the row, step, buffered-event flag and data."""
    row = {
        "pause": pending(),
        "cancel": pending(),
        "resume": waiting("pause"),
        "fast_forward": waiting("wait_for"),
    }
    step = {"resume": record("pause"), "fast_forward": record("wait_for")}.get(action)
    assert tr.apply_change(action, row[action], step, False, {"ff": 1}, NOW) == expected
    assert action in tr.CLIENT_ACTIONS


def test_apply_change_passes_the_buffered_event_flag() -> None:
    """resume through apply_change wakes a held waiter when a matching event is buffered."""
    after, _ = tr.apply_change("resume", held(waiting("wait_for")), record("wait_for"), True, None, NOW)
    assert after.status == PENDING


def test_apply_change_refuses_an_unknown_action() -> None:
    """An unknown action is a programming error (ValueError naming it)."""
    with pytest.raises(ValueError, match="'explode'"):
        tr.apply_change("explode", pending(), None, False, None, NOW)


# ===================================================== rules that contradict the SPEC (bugs, pinned)


@pytest.mark.parametrize("kind", ["wait_for", "delay", "child"])
def test_cancel_clears_waiting(kind: str) -> None:
    """SPEC §4: ``waiting`` is set only while suspended at a step; a cancelled run is not."""
    assert tr.cancel(waiting(kind), NOW).waiting is None


def test_a_claimed_run_no_longer_reports_a_wait() -> None:
    """SPEC §3/§4: a running run executes; ``waiting`` (suspended at a step) is None."""
    assert tr.claim(waiting("delay", due_at=EARLIER), "w2", NOW, LEASE).waiting is None


def test_fast_forward_leaves_a_running_run_whose_worker_died_unchanged() -> None:
    """SPEC §4: a run neither waiting nor held (running, its lease expired) is returned unchanged."""
    fired = Waiting("s", "delay", None, EARLIER)  # the worker recorded the Delay fired, then died
    row = expired(waiting=fired, wake_at=EARLIER)
    assert tr.fast_forward(row, record("delay", "completed"), None, NOW) == (row, None)


@pytest.mark.parametrize("action", ["resume", "fast_forward"])
def test_a_held_parent_whose_child_ended_continues_when_released(action: str) -> None:
    """SPEC §2/§4: a held parent whose child ended meanwhile continues once resumed (or fast-forwarded);
    today child_finished keeps ``waiting`` on the held parent, and the release parks it there again
    with nothing due: stranded for good."""
    parent, done = tr.child_finished(held(waiting("child")), CHILD_WAIT, child(COMPLETED, output=1), EARLIER)
    released, _ = tr.apply_change(action, parent, done, False, None, NOW)
    assert released.status == PENDING and released.due_at == NOW


# ========================================================== retry: re-driving a failed or cancelled run

RETRIED = {"status": PENDING, "completed_at": None, "due_at": NOW, "updated_at": NOW, "current_step_id": None}
RETRY_HINT = "; only a failed or cancelled run can be retried"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param(ended(FAILED), RETRIED | {"error": None}, id="failed"),
        pytest.param(ended(FAILED, retry_count=3, max_retries=3), RETRIED | {"error": None, "retry_count": 0},
                     id="failed-with-its-retries-used"),
        pytest.param(ended(CANCELLED), RETRIED, id="cancelled"),
        pytest.param(ended(CANCELLED, error=ERR, retry_count=1), RETRIED | {"error": None, "retry_count": 0},
                     id="cancelled-in-a-retry-backoff"),
        pytest.param(ended(FAILED, timeout_at=at(60)), RETRIED | {"error": None, "timeout_at": at(160)},
                     id="timed-out-gets-a-fresh-deadline"),
        pytest.param(ended(CANCELLED, timeout_at=DEADLINE), RETRIED | {"timeout_at": NOW + (DEADLINE - T0)},
                     id="cancelled-before-its-deadline-gets-the-same-span-from-now"),
    ],
)  # fmt: skip
def test_retry(row: RunRow, expected: dict[str, Any]) -> None:
    """A failed or cancelled run is pending, due now, clean, with its timeout counted from now."""
    assert changes(row, tr.retry(row, NOW)) == expected


def test_retry_clears_what_a_new_run_does_not_have() -> None:
    """Output, wait, lease and hold are cleared; lease token and mailbox count are kept."""
    row = ended(CANCELLED, output={"x": 1}, waiting=WAITS["delay"], wake_at=LATER, lease_owner="w1",
                lease_expires_at=LATER, held=True, lease_token=7, mailbox_seq=4)  # fmt: skip
    after = tr.retry(row, NOW)
    assert (after.output, after.waiting, after.wake_at, after.lease_owner, after.lease_expires_at) == (
        None,
    ) * 5
    assert not after.held and after.lease_token == 7 and after.mailbox_seq == 4


@pytest.mark.parametrize(
    ("row", "status"),
    [
        pytest.param(pending(), "pending", id="pending"),
        pytest.param(backoff(), "pending", id="retry-backoff"),
        pytest.param(running(), "running", id="running"),
        pytest.param(expired(), "running", id="running-lease-expired"),
        *[pytest.param(waiting(k), "paused", id=f"waiting-at-{k}") for k in WAITS],
        pytest.param(held(pending()), "paused and held", id="held-pending"),
        pytest.param(held(waiting("delay")), "paused and held", id="held-waiting"),
        pytest.param(ended(COMPLETED), "completed", id="completed"),
    ],
)  # fmt: skip
def test_retry_refused(row: RunRow, status: str) -> None:
    """Any other run raises InvalidStateError naming run, workflow, state and what allows a retry."""
    with pytest.raises(InvalidStateError) as info:
        tr.retry(row, NOW)
    assert str(info.value) == state_error("retry", status, RETRY_HINT)


def test_a_renewed_deadline_past_year_9999_is_the_end_of_time() -> None:
    """A span that no longer fits from now is capped at the largest time, never an error."""
    row = ended(FAILED, timeout_at=pendulum.datetime(9999, 1, 1, tz="UTC"))
    assert tr.renewed_deadline(row, pendulum.datetime(9000, 1, 1, tz="UTC")) == DateTime.max.replace(
        tzinfo=pendulum.UTC
    )
    assert tr.renewed_deadline(ended(FAILED), NOW) is None


def rec(step_id: str, seq: int, status: str = "completed", kind: str = "run") -> StepRecord:
    """A step record at ``seq``."""
    return StepRecord(step_id, kind, status, started_at=T0, seq=seq, attempts=1)


HISTORY = [rec("a", 1), rec("w", 2, kind="wait_for"), rec("b", 3), rec("c", 4, "failed")]


@pytest.mark.parametrize(
    ("steps", "from_step", "discarded"),
    [
        pytest.param(HISTORY, None, ["c"], id="the-failed-step"),
        pytest.param([rec("a", 1), rec("x", 2, "failed"), rec("y", 3, "failed")], None, ["x", "y"],
                     id="every-failed-step"),
        pytest.param([rec("a", 1)], None, [], id="nothing-failed"),
        pytest.param([], None, [], id="no-records"),
        pytest.param([rec("a", 1), rec("r", 2, "running")], None, ["r"], id="a-step-cut-short-while-running"),
        pytest.param([rec("a", 1), rec("r", 2, "waiting")], None, ["r"], id="a-run-step-in-its-retry-backoff"),
        *[pytest.param([rec("a", 1), rec("s", 2, "waiting", kind)], None, ["s"], id=f"a-cut-short-{kind}")
          for kind in ("wait_for", "delay", "wait_until", "poll", "pause")],
        pytest.param([rec("a", 1), rec("k", 2, "waiting", "child")], None, [],
                     id="a-child-step-waiting-for-its-live-child-is-kept"),
        pytest.param([rec("a", 1), rec("k", 2, "failed", "child")], None, ["k"], id="a-child-step-whose-child-failed"),
        pytest.param([rec("a", 1), rec("k", 2, "completed", "child")], None, [], id="a-child-step-completed"),
        pytest.param(HISTORY, "w", ["w", "b", "c"], id="from_step-and-every-later-step"),
        pytest.param(HISTORY, "a", ["a", "w", "b", "c"], id="from_step-the-first"),
        pytest.param(HISTORY, "c", ["c"], id="from_step-the-failed-one"),
        pytest.param(list(reversed(HISTORY)), "b", ["b", "c"], id="by-seq-not-by-list-order"),
        pytest.param([rec("a", 1), rec("k", 2, "waiting", "child"), rec("b", 3)], "k", ["k", "b"],
                     id="from_step-a-child-step-waiting-for-its-child"),
    ],
)  # fmt: skip
def test_records_to_discard(steps: list[StepRecord], from_step: str | None, discarded: list[str]) -> None:
    """A retry discards all but final successes and waiting Child steps, plus from_step's suffix."""
    assert tr.records_to_discard(ended(FAILED), steps, from_step) == discarded


@pytest.mark.parametrize(
    ("steps", "recorded"),
    [(HISTORY, "recorded: 'a', 'w', 'b', 'c'"), ([], "recorded: none")],
    ids=["unknown-step", "no-records-at-all"],
)
def test_records_to_discard_refuses_a_from_step_without_record(
    steps: list[StepRecord], recorded: str
) -> None:
    """An unknown from_step is an InvalidArgumentError listing the recorded steps."""
    with pytest.raises(InvalidArgumentError) as info:
        tr.records_to_discard(ended(FAILED), steps, "nope")
    assert str(info.value) == (
        f"from_step 'nope': run r1 (workflow 'wf') has no record of that step; name a step it has reached "
        f"({recorded})"
    )


@pytest.mark.parametrize(
    ("step", "answer"),
    [
        pytest.param(record("child"), True, id="waiting-for-this-child"),
        pytest.param(record("child", output={"child_run_id": "other"}), False, id="waiting-for-another-child"),
        pytest.param(record("child", "completed"), False, id="settled-already"),
        pytest.param(record("child", output=None), False, id="no-child-recorded"),
    ],
)  # fmt: skip
def test_waits_for_child(step: StepRecord, answer: bool) -> None:
    """Only a Child step still waiting for that very child is settled by its end."""
    assert tr.waits_for_child(step, "k") is answer


@pytest.mark.parametrize(
    ("kid", "orphaned"),
    [
        pytest.param(attrs.evolve(pending(), parent_step_id="s"), True, id="live-started-by-a-discarded-step"),
        pytest.param(attrs.evolve(pending(), parent_step_id="kept"), False, id="live-started-by-a-kept-step"),
        pytest.param(child(COMPLETED), False, id="ended"),
    ],
)  # fmt: skip
def test_orphaned_by_retry(kid: RunRow, orphaned: bool) -> None:
    """A retry cancels only the live children that a discarded Child step started."""
    assert tr.orphaned_by_retry(kid, ["s"]) is orphaned


def earlier(record: StepRecord, **kw: Any) -> StepRecord:
    """``record`` re-marked as a failure of an earlier run attempt."""
    return attrs.evolve(record, run_attempt=tr.EARLIER_ATTEMPT, **kw)


ALL_FAILED = [rec("a", 1), rec("x", 2, "failed"), rec("y", 3)]  # All(x, y): x failed, y completed


@pytest.mark.parametrize(
    ("steps", "discarded", "deleted", "rewritten"),
    [
        pytest.param(HISTORY, ["c"], ["c"], [], id="the-last-failure-is-deleted"),
        pytest.param(HISTORY, ["w", "b", "c"], ["w", "b", "c"], [], id="from_step-deletes-a-suffix"),
        pytest.param(ALL_FAILED, ["x"], [], [earlier(ALL_FAILED[1])], id="a-failure-kept-records-follow"),
        pytest.param([*ALL_FAILED, rec("z", 4, "failed")], ["x", "z"], ["z"], [earlier(ALL_FAILED[1])],
                     id="both-kinds"),
        pytest.param([rec("a", 1, "failed"), rec("k", 2, "waiting", "child")], ["a"], [], [earlier(rec("a", 1, "failed"))],
                     id="a-waiting-child-step-is-kept-too"),
        pytest.param([rec("a", 1), rec("w", 2, "waiting", "wait_for"), rec("r", 3)], ["w"], [],
                     [earlier(rec("w", 2, "waiting", "wait_for"), status="failed", completed_at=NOW, error=RunError(
                         "StepInterrupted", "step 'w' was still waiting when run r1 failed; a retry executes it again",
                         None, "w"))],
                     id="a-wait-cut-short-in-an-all-is-interrupted"),
        pytest.param([rec("a", 0, "failed"), rec("b", 0, "waiting")], ["a", "b"], ["a", "b"], [],
                     id="nothing-kept-everything-deleted"),
        pytest.param([rec("a", 0, "failed"), rec("b", 0)], ["a"], [], [earlier(rec("a", 0, "failed"))],
                     id="records-written-before-seq-existed-follow-at-the-same-seq"),
        pytest.param([], [], [], [], id="nothing"),
    ],
)  # fmt: skip
def test_split_discards(
    steps: list[StepRecord], discarded: list[str], deleted: list[str], rewritten: list[StepRecord]
) -> None:
    """Discards no kept record follows are deleted; the others become earlier-attempt failures."""
    assert tr.split_discards(ended(FAILED), steps, discarded, NOW) == (deleted, rewritten)


def test_a_step_cut_short_by_a_cancel_says_so() -> None:
    """A running record mid-history of a cancelled run is rewritten as interrupted by the cancel."""
    running_step = attrs.evolve(rec("s", 1, "running"), wake_at=LATER)
    _, (found,) = tr.split_discards(ended(CANCELLED), [running_step, rec("t", 2)], ["s"], NOW)
    assert found.error is not None and found.error.message.endswith(
        "when run r1 was cancelled; a retry executes it again"
    )
    assert (found.status, found.wake_at, found.run_attempt) == ("failed", None, -1)
