"""Safe code evolution end to end (SPEC §14): a run that waits on v1 code and continues on v2 code
(a second engine on the same schema) stops with NonDeterminismError when v2 diverges before the point
the run reached, and no side effect repeats; patching lets old runs keep their path and new runs take
the new one."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

import pgflow
from pgflow import All, Run, WaitFor, workflow

pytestmark = pytest.mark.postgres
Flow = Generator[Any, Any, Any]
EFFECTS: Counter[str] = Counter()
_lock = threading.Lock()


def effect(name: str) -> str:
    with _lock:
        EFFECTS[name] += 1
    return name


def _v1(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _rename(ctx: Any) -> Flow:
    yield Run("charge-card", effect, "charge")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _insert(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    yield Run("fraud-check", effect, "fraud-check")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _remove(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _reorder(ctx: Any) -> Flow:
    yield Run("email", effect, "email")
    yield Run("charge", effect, "charge")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _early_return(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    return "nothing more"


def _parallel_v1(ctx: Any) -> Flow:
    yield All(Run("charge", effect, "charge"), Run("email", effect, "email"))
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _parallel(ctx: Any) -> Flow:  # the All's second step changed
    yield All(Run("charge", effect, "charge"), Run("sms", effect, "sms"))
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _event(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="signed-off")
    yield Run("ship", effect, "ship")


def _after_the_wait(ctx: Any) -> Flow:  # changes only what comes after the point the run reached
    yield Run("charge", effect, "charge")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="approved")
    yield Run("gift-wrap", effect, "gift-wrap")
    yield Run("ship", effect, "ship")


@pytest.fixture
def engines(pg_dsn: str, pg_schema: str) -> Iterator[Callable[[Callable[..., Flow]], pgflow.Engine]]:
    started: list[pgflow.Engine] = []

    def start(fn: Callable[..., Flow]) -> pgflow.Engine:
        engine = pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[workflow("order")(fn)], lease="2s")
        started.append(engine.start())
        return engine

    EFFECTS.clear()
    yield start
    for engine in started:
        engine.stop()


def _waiting_on_v1(
    start: Callable[[Callable[..., Flow]], pgflow.Engine], code: Callable[..., Flow] = _v1
) -> str:
    v1 = start(code)
    run = v1.start_workflow("order")
    v1.wait_for_run(run.id, until="paused", timeout="10s")
    v1.stop()
    return run.id


@pytest.mark.parametrize(
    "v2", [_rename, _insert, _remove, _reorder, _early_return, _parallel, _event],
    ids=["rename", "insert", "remove", "reorder", "early-return", "changed-all", "changed-event"],
)  # fmt: skip
def test_a_divergent_deploy_stops_the_run_and_repeats_no_side_effect(
    engines: Callable[[Callable[..., Flow]], pgflow.Engine], v2: Callable[..., Flow]
) -> None:
    """v2 code that diverges before the point a v1 run reached fails the run with NonDeterminismError
    (not retried) as soon as it replays, and runs no recorded step again."""
    run_id = _waiting_on_v1(engines, _parallel_v1 if v2 is _parallel else _v1)
    engine = engines(v2)
    engine.trigger_event(run_id, "approved")
    done = engine.wait_for_run(run_id, timeout="10s")
    assert done.status == "failed" and done.error is not None, done
    assert done.error.type == "NonDeterminismError" and run_id in done.error.message
    assert EFFECTS["charge"] == 1 and EFFECTS["email"] <= 1 and EFFECTS["ship"] == 0


def test_a_deploy_that_changes_only_later_code_goes_on(
    engines: Callable[[Callable[..., Flow]], pgflow.Engine],
) -> None:
    """Code changed only after the point the run reached replays identically and continues."""
    run_id = _waiting_on_v1(engines)
    engine = engines(_after_the_wait)
    engine.trigger_event(run_id, "approved")
    done = engine.wait_for_run(run_id, timeout="10s")
    assert done.status == "completed" and list(done.timeline) == [
        "charge",
        "email",
        "approve",
        "gift-wrap",
        "ship",
    ]
    assert Counter({"charge": 1, "email": 1, "gift-wrap": 1, "ship": 1}) == EFFECTS


def _patched(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    if ctx.patched("verify-address"):
        yield Run("verify", effect, "verify")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")


def _patched_after_the_wait(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    yield Run("email", effect, "email")
    yield WaitFor("approve", event="approved")
    if ctx.patched("gift"):
        yield Run("gift-wrap", effect, "gift-wrap")
    yield Run("ship", effect, "ship")


def test_patching_keeps_old_runs_on_the_old_path_and_new_runs_on_the_new_one(
    engines: Callable[[Callable[..., Flow]], pgflow.Engine],
) -> None:
    """An old run replays past `patched()` as False (no marker, old path); a new run records the marker
    (shown in the timeline, not counted by check_progress) and takes the new path."""
    old_id = _waiting_on_v1(engines)
    engine = engines(_patched)
    new_id = engine.start_workflow("order").id
    engine.wait_for_run(new_id, until="paused", timeout="10s")
    for run_id in (old_id, new_id):
        engine.trigger_event(run_id, "approved")
    old, new = (engine.wait_for_run(r, timeout="10s") for r in (old_id, new_id))
    assert old.status == new.status == "completed", (old.error, new.error)
    assert list(old.timeline) == ["charge", "email", "approve", "ship"]
    assert list(new.timeline) == ["charge", "patch:verify-address", "verify", "email", "approve", "ship"]
    marker = new.timeline["patch:verify-address"]
    assert (marker.kind, marker.status, marker.seq) == ("patch", "completed", 2)
    progress = engine.check_progress(new_id)
    assert progress.completed_steps == 5 and progress.total_steps == 5
    assert EFFECTS["verify"] == 1 and EFFECTS["charge"] == 2


def test_a_patch_after_the_point_an_old_run_reached_applies_to_it(
    engines: Callable[[Callable[..., Flow]], pgflow.Engine],
) -> None:
    """A run that had not reached the patched place yet takes the new path there (nothing to replay)."""
    run_id = _waiting_on_v1(engines)
    engine = engines(_patched_after_the_wait)
    engine.trigger_event(run_id, "approved")
    done = engine.wait_for_run(run_id, timeout="10s")
    assert done.status == "completed" and "patch:gift" in done.timeline and EFFECTS["gift-wrap"] == 1
