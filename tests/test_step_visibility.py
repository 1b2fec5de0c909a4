"""A step is visible while it runs, replay knows what ran, validators run once (SPEC §13), on the
in-memory Harness and the Postgres one alike, and through a real Engine."""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import All, Delay, Pause, Retry, Run, WaitFor, workflow
from pgflow.testing import Harness, SimClock

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_harness(request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[Harness] = []

    def make(*workflows: pgflow.Workflow, lease: str = "30s") -> Harness:
        kwargs: dict[str, Any] = {}
        if request.param == "postgres":
            kwargs = {
                "dsn": request.getfixturevalue("pg_dsn"),
                "schema": request.getfixturevalue("pg_schema"),
            }
        h = Harness(workflows=workflows, clock=SimClock(T0), lease=lease, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _seen_while_running(h: Harness, box: dict[str, Any], step_id: str) -> Any:
    run = h.get_run(box["run"])
    progress = h.check_progress(box["run"])
    box.setdefault("seen", []).append((step_id, run, progress))
    return step_id


def test_a_running_step_is_recorded_before_its_code_starts(make_harness: Any) -> None:
    """While a step's function runs, its record is ``running`` (attempt 1, started now) and the run's
    current_step_id names it; check_progress shows it too."""
    box: dict[str, Any] = {}

    @workflow("visible")
    def wf(ctx: Any) -> Flow:
        yield Run("a", lambda: _seen_while_running(h, box, "a"))
        yield Run("b", lambda: _seen_while_running(h, box, "b"))

    h = make_harness(wf)
    box["run"] = h.start_workflow(wf).id
    h.run_until_idle()
    assert h.get_run(box["run"]).status == "completed"
    (_, at_a, progress_a), (_, at_b, _) = box["seen"]
    assert at_a.status == "running" and at_a.current_step_id == "a" and progress_a.current_step_id == "a"
    rec = at_a.timeline["a"]
    assert (rec.status, rec.attempts, rec.started_at, rec.seq) == ("running", 1, T0, 1)
    assert at_b.current_step_id == "b" and at_b.timeline["a"].status == "completed"
    assert (at_b.timeline["b"].status, at_b.timeline["b"].seq) == ("running", 2)
    assert progress_a.completed_steps == 0 and progress_a.total_steps == 2


def test_every_step_of_an_all_is_running_and_the_first_is_current(make_harness: Any) -> None:
    """The steps of an All are all recorded as running before any of them starts; the run is at the
    first one still running."""
    box: dict[str, Any] = {}

    @workflow("visible-all")
    def wf(ctx: Any) -> Flow:
        yield All(Run("x", lambda: _seen_while_running(h, box, "x")), Run("y", lambda: "y"))

    h = make_harness(wf)
    box["run"] = h.start_workflow(wf).id
    h.run_until_idle()
    (_, seen, _) = box["seen"][0]
    assert seen.current_step_id == "x"
    assert {sid: (r.status, r.seq) for sid, r in seen.timeline.items() if sid in ("x", "y")} in (
        {"x": ("running", 1), "y": ("running", 2)},
        {"x": ("running", 1), "y": ("completed", 2)},  # y ran on its own thread and finished first
    )
    assert h.get_run(box["run"]).status == "completed"


def test_a_retried_step_shows_the_attempt_now_running(make_harness: Any) -> None:
    """The running record of a step's second attempt says attempts == 2 (and keeps its first start)."""
    box: dict[str, Any] = {"calls": 0}

    def flaky() -> str:
        box["calls"] += 1
        _seen_while_running(h, box, "flaky")
        if box["calls"] == 1:
            raise ConnectionError("down")
        return "ok"

    @workflow("visible-retry")
    def wf(ctx: Any) -> Flow:
        return (yield Run("flaky", flaky, retry=Retry(max_attempts=3, initial="10s", jitter=0)))

    h = make_harness(wf)
    box["run"] = h.start_workflow(wf).id
    done = h.run_until_complete(box["run"])
    assert done.output == "ok"
    attempts = [(run.timeline["flaky"].status, run.timeline["flaky"].attempts) for _, run, _ in box["seen"]]
    assert attempts == [("running", 1), ("running", 2)]
    assert box["seen"][1][1].timeline["flaky"].started_at == T0 and done.timeline["flaky"].attempts == 2


def test_code_that_ran_before_a_crash_logs_once(make_harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    """After crash_before, the replay is replaying until the step that was running: ctx.logger lines
    written before the crash are not written again; those after the step are written once."""

    @workflow("log-once")
    def wf(ctx: Any) -> Flow:
        ctx.logger.info("before a")
        yield Run("a", lambda: 1)
        ctx.logger.info("between a and b")
        yield Run("b", lambda: 2)
        ctx.logger.info("after b")

    h = make_harness(wf, lease="5s")
    h.crash_before("b")
    with caplog.at_level(logging.INFO, logger="pgflow.workflow"):
        run_id = h.start_workflow(wf).id
        h.run_until_idle()
        h.advance("5s")
    assert h.get_run(run_id).status == "completed"
    lines = [r.getMessage() for r in caplog.records if r.name == "pgflow.workflow.log-once"]
    assert lines == ["before a", "between a and b", "after b"]


def test_is_replaying_follows_the_records(make_harness: Any) -> None:
    """is_replaying is true in code that ran before (up to the last recorded step, a running one
    included) and false in code that never ran: after a Pause, after a hold."""
    seen: list[tuple[str, bool]] = []

    @workflow("replaying")
    def wf(ctx: Any) -> Flow:
        seen.append(("start", ctx.is_replaying))
        yield Pause("approve")
        seen.append(("after pause", ctx.is_replaying))
        yield Delay("cool", "1h")
        seen.append(("after delay", ctx.is_replaying))

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    h.run_until_idle()
    h.resume_workflow(run_id)
    h.run_until_idle()
    h.pause_workflow(run_id)
    h.advance("2h")
    h.resume_workflow(run_id)
    h.run_until_idle()
    assert h.get_run(run_id).status == "completed"
    fresh = [where for where, replaying in seen if not replaying]
    assert fresh == ["start", "after pause", "after delay"]  # each line of code ran fresh once
    assert ("start", True) in seen and ("after pause", True) in seen  # and was replayed later


def test_a_callable_input_validator_runs_once(make_harness: Any) -> None:
    """input=callable is applied once, at start; every replay sees the stored result."""
    calls: list[int] = []

    def hundredfold(n: int) -> int:
        calls.append(n)
        return n * 100

    @workflow("validate-once", input=hundredfold)
    def wf(ctx: Any) -> Flow:
        yield Delay("d", "1s")
        yield Delay("e", "1s")
        return ctx.input

    h = make_harness(wf)
    run = h.start_workflow(wf, 3)
    assert run.input == 300
    assert h.run_until_complete(run.id).output == 300 and calls == [3]


def test_a_callable_event_schema_runs_once(make_harness: Any) -> None:
    """WaitFor(schema=callable) validates an event once, when it is consumed; replays get the stored value."""
    calls: list[Any] = []

    def tagged(data: Any) -> Any:
        calls.append(data)
        return {**data, "checked": len(calls)}

    @workflow("schema-once")
    def wf(ctx: Any) -> Flow:
        got = yield WaitFor("w", event="go", schema=tagged)
        yield Delay("d", "1s")
        yield Delay("e", "1s")
        return got

    h = make_harness(wf)
    run_id = h.start_workflow(wf).id
    h.run_until_idle()
    h.trigger_event(run_id, "go", {"n": 1})
    assert h.run_until_complete(run_id).output == {"n": 1, "checked": 1} and len(calls) == 1


# -- a real engine ---------------------------------------------------------------------------------------

RELEASE: dict[str, threading.Event] = {}
STARTED: dict[str, threading.Event] = {}


def _slow_llm_call(key: str) -> str:
    STARTED[key].set()
    assert RELEASE[key].wait(10)
    return "answer"


@workflow("slow-call")
def slow_call(ctx: pgflow.Context[Any]) -> Flow:
    yield Run("prepare", lambda: "ok")
    return (yield Run("llm", _slow_llm_call, ctx.input))


@pytest.mark.postgres
def test_a_long_step_is_visible_through_the_client_while_it_runs(pg_dsn: str, pg_schema: str) -> None:
    """A Client (another connection) sees the running step of a run an Engine executes."""
    key = "visible"
    RELEASE[key], STARTED[key] = threading.Event(), threading.Event()
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[slow_call]) as engine:
        run = engine.start_workflow(slow_call, key)
        assert STARTED[key].wait(10)
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            now = client.get_run(run.id)
            progress = client.check_progress(run.id)
        RELEASE[key].set()
        done = engine.wait_for_run(run.id, timeout="10s")
    assert now.status == "running" and now.current_step_id == "llm" and progress.current_step_id == "llm"
    assert now.timeline["llm"].status == "running" and now.timeline["llm"].attempts == 1
    assert now.timeline["llm"].started_at is not None and now.timeline["prepare"].status == "completed"
    assert (progress.completed_steps, progress.total_steps) == (1, 2)
    assert done.output == "answer" and done.timeline["llm"].status == "completed"
