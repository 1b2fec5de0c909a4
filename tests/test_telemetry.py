"""OpenTelemetry (SPEC §15): spans, the stored trace context, metrics; and nothing without the extra."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pendulum
import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import pgflow
from otel_support import Captured, captured
from pgflow import All, Child, Retry, Run, Sleep, workflow
from pgflow.store import NewRun
from pgflow.testing import AsyncHarness, Harness, SimClock

ROOT = Path(__file__).resolve().parent.parent


def tracer() -> trace.Tracer:
    """The tests' tracer, from the global provider set for this test (never one kept from another)."""
    return trace.get_tracer("tests")


@pytest.fixture
def otel() -> Iterator[Captured]:
    with captured() as found:
        yield found


def add(a: int, b: int) -> int:
    return a + b


def boom() -> None:
    raise ValueError("no luck")


def traced_inside() -> str:
    """A step whose own span must be a child of the step's span."""
    with tracer().start_as_current_span("user.work"):
        return "ok"


async def traced_inside_async() -> str:
    with tracer().start_as_current_span("user.work"):
        await asyncio.sleep(0)
        return "ok"


@workflow("otel-two")
def two_steps(ctx: pgflow.Context[Any]):
    a = yield Run("first", add, 1, 2)
    b = yield Run("second", add, a, 3)
    return b


@workflow("otel-failing")
def failing(ctx: pgflow.Context[Any]):
    yield Run("boom", boom, retry=Retry(max_attempts=2, initial="10ms", jitter=0))


@workflow("otel-nested")
def nested(ctx: pgflow.Context[Any]):
    yield All(Run("sync", traced_inside), Run("async", traced_inside_async))
    yield Run("timed", traced_inside, timeout="5s")
    return "done"


@workflow("otel-kid")
def kid(ctx: pgflow.Context[Any]):
    value = yield Run("kid-step", add, 2, 2)
    return value


@workflow("otel-parent")
def parent(ctx: pgflow.Context[Any]):
    value = yield Child("spawn", kid)
    return value


@workflow("otel-sleepy")
def sleepy(ctx: pgflow.Context[Any]):
    yield Run("before", add, 0, 1)
    yield Sleep("nap", "1 day")
    yield Run("after", add, 1, 1)


def _by_step(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(str((span.attributes or {})["pgflow.step_id"]), []).append(span)
    return found


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _of(spans: list[ReadableSpan], workflow_id: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("pgflow.workflow_id") == workflow_id]


def _check_two_steps(otel: Captured, request: ReadableSpan, run_id: str) -> None:
    """The shape every driver must give a run of ``two_steps`` started inside ``request``."""
    (start,) = _of(otel.spans("pgflow.start_workflow"), "otel-two")
    assert start.kind == SpanKind.PRODUCER
    assert _parent_id(start) == request.context.span_id
    assert start.attributes == {"pgflow.workflow_id": "otel-two", "pgflow.run_id": run_id}
    steps = _of(otel.spans("pgflow.step"), "otel-two")
    assert [s.attributes for s in steps] == [
        {"pgflow.run_id": run_id, "pgflow.workflow_id": "otel-two", "pgflow.step_id": step_id,
         "pgflow.attempt": 1, "pgflow.step.kind": "run"}
        for step_id in ("first", "second")
    ]  # fmt: skip
    for span in steps:
        assert span.kind == SpanKind.CONSUMER
        assert span.context.trace_id == request.context.trace_id
        assert _parent_id(span) == start.context.span_id  # children of the start, in the request's trace
        assert span.status.status_code == StatusCode.UNSET
        assert not span.links
    assert otel.count("pgflow.steps", **{"pgflow.workflow_id": "otel-two", "status": "completed"}) == 2
    assert otel.count("pgflow.runs", **{"pgflow.workflow_id": "otel-two", "status": "completed"}) == 1
    (durations,) = otel.points("pgflow.step.duration", **{"pgflow.workflow_id": "otel-two"})
    assert durations.count == 2 and durations.sum >= 0
    (delays,) = otel.points("pgflow.claim.delay", **{"pgflow.workflow_id": "otel-two"})
    assert delays.count >= 1 and delays.min >= 0


def _check_nested(otel: Captured) -> None:
    """A span the step's code starts is a child of that step's span."""
    steps = {s.context.span_id: s for s in _of(otel.spans("pgflow.step"), "otel-nested")}
    users = otel.spans("user.work")
    assert len(users) == 3
    assert sorted(str((steps[_parent_id(u) or 0].attributes or {})["pgflow.step_id"]) for u in users) == [
        "async", "sync", "timed",
    ]  # fmt: skip


# -- the in-memory harness (the threaded driver) -------------------------------------------------------


def test_step_spans_are_children_of_the_request_that_started_the_run(otel: Captured) -> None:
    """start_workflow inside a request's span: the start span is its child, every step span a child of
    the start span (one trace); the spans carry the run, workflow, step, attempt and kind."""
    with Harness([two_steps]) as h:
        with tracer().start_as_current_span("request"):
            run = h.start_workflow(two_steps, {})
        assert h.run_until_complete(run.id).output == 6
    (request,) = otel.spans("request")
    _check_two_steps(otel, request, run.id)


def test_a_failing_step_has_an_error_status_and_an_exception_event(otel: Captured) -> None:
    """Each attempt is a span; a failed one has an ERROR status and the exception as an event; the
    steps and runs counters say failed."""
    with Harness([failing]) as h:
        run = h.start_workflow(failing, {})
        assert h.run_until_complete(run.id).status == "failed"
    spans = otel.spans("pgflow.step")
    assert [(s.attributes or {})["pgflow.attempt"] for s in spans] == [1, 2]
    for span in spans:
        assert span.status.status_code == StatusCode.ERROR
        (event,) = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ValueError"
        assert (event.attributes or {})["exception.message"] == "no luck"
    assert otel.count("pgflow.steps", status="failed") == 2
    assert otel.count("pgflow.steps", status="completed") == 0
    assert otel.count("pgflow.runs", **{"pgflow.workflow_id": "otel-failing", "status": "failed"}) == 1


def test_the_step_span_is_current_where_the_step_code_runs(otel: Captured) -> None:
    """A span the step's code starts is a child of the step span: in an All's threads, in an async
    step on the helper loop and in a step with a timeout (run on a helper thread)."""
    with Harness([nested]) as h:
        run = h.start_workflow(nested, {})
        assert h.run_until_complete(run.id).output == "done"
    _check_nested(otel)


def test_a_child_run_is_traced_under_its_child_step(otel: Captured) -> None:
    """The Child step has its span; the child run's steps are its children, in the same trace."""
    with Harness([parent, kid]) as h:
        run = h.start_workflow(parent, {})
        assert h.run_until_complete(run.id).output == 4
    spans = _by_step(otel.spans("pgflow.step"))
    (spawn,) = spans["spawn"]
    (kid_step,) = spans["kid-step"]
    assert (spawn.attributes or {})["pgflow.step.kind"] == "child"
    assert _parent_id(kid_step) == spawn.context.span_id
    assert kid_step.context.trace_id == spawn.context.trace_id
    assert otel.count("pgflow.runs", status="completed") == 2  # the child and its parent


def test_a_run_claimed_long_after_its_start_links_to_it(otel: Captured) -> None:
    """Steps claimed within CHILD_WINDOW of the start are children of it; after a day's sleep each
    step span starts a new trace, linked to the start span."""
    clock = SimClock()
    with Harness([sleepy], clock=clock) as h:
        run = h.start_workflow(sleepy, {})
        h.run_until_idle()
        h.advance("1 day")
        assert h.run_until_complete(run.id).status == "completed"
    (start,) = otel.spans("pgflow.start_workflow")
    spans = _by_step(otel.spans("pgflow.step"))
    (before,), (after,) = spans["before"], spans["after"]
    assert _parent_id(before) == start.context.span_id and not before.links
    assert after.parent is None and after.context.trace_id != start.context.trace_id
    (link,) = after.links
    assert link.context.span_id == start.context.span_id
    (delays,) = otel.points("pgflow.claim.delay", **{"pgflow.workflow_id": "otel-sleepy"})
    assert delays.count == 2 and delays.max == 0  # the harness claims what is due at once


def test_cancelling_counts_a_cancelled_run(otel: Captured) -> None:
    """pgflow.runs counts a cancel where it happens: in the client that cancelled."""
    with Harness([sleepy]) as h:
        run = h.start_workflow(sleepy, {})
        h.run_until_idle()
        h.cancel_workflow(run.id)
    assert otel.count("pgflow.runs", **{"pgflow.workflow_id": "otel-sleepy", "status": "cancelled"}) == 1


def test_the_stored_trace_context_is_the_start_span(otel: Captured) -> None:
    """The run keeps the W3C traceparent of its start span (nothing when nothing is traced)."""
    with Harness([two_steps]) as h:
        run = h.start_workflow(two_steps, {})
        row, _ = h.store.get(run.id, None)
    (start,) = otel.spans("pgflow.start_workflow")
    assert row.trace_context == {
        "traceparent": f"00-{start.context.trace_id:032x}-{start.context.span_id:016x}-{start.context.trace_flags:02x}"
    }


def test_without_a_provider_nothing_is_stored_and_steps_still_run() -> None:
    """With the API but no SDK configured, runs work and store no trace context."""
    with Harness([two_steps]) as h:
        run = h.start_workflow(two_steps, {})
        assert h.run_until_complete(run.id).output == 6
        row, _ = h.store.get(run.id, None)
    assert row.trace_context is None


def test_metrics_without_a_tracer_provider() -> None:
    """A meter provider alone: counts and histograms, no trace context stored, and a child run keeps
    its parent's (none here) since no Child span exists."""
    with captured(tracing=False) as otel, Harness([parent, kid]) as h:
        run = h.start_workflow(parent, {})
        assert h.run_until_complete(run.id).output == 4
        assert h.store.get(run.id, None)[0].trace_context is None
        assert otel.count("pgflow.runs", status="completed") == 2
        assert otel.count("pgflow.steps", status="completed") == 2  # the Child start is a step too
        assert otel.points("pgflow.claim.delay", **{"pgflow.workflow_id": "otel-kid"})
        assert otel.spans() == []


def test_a_child_keeps_its_parents_context_when_its_worker_does_not_trace() -> None:
    """A worker without a tracer provider gives a child run the parent's stored context, so a later
    traced worker still puts the child's steps in the request's trace."""
    with captured() as otel, Harness([parent, kid]) as h:
        run = h.start_workflow(parent, {})
        stored = h.store.get(run.id, None)[0].trace_context
        assert stored is not None and otel.spans("pgflow.start_workflow")
    with Harness([parent, kid]) as h2:  # no provider any more: the worker traces nothing
        h2.store.start_run(attrs.evolve(_new_run(run.workflow_id, h2.clock.now()), trace_context=stored))
        h2.run_until_idle()
        (child,) = h2.get_runs(workflow_id="otel-kid").items
        assert h2.store.get(child.id, None)[0].trace_context == stored


def _new_run(workflow_id: str, now: pendulum.DateTime) -> NewRun:
    return NewRun("p-1", workflow_id, None, {}, 0, 1.0, None, None, now)


@workflow("otel-limited", concurrency=1, key_concurrency=1)
def limited(ctx: pgflow.Context[Any]):
    yield Run("work", add, 1, 1)
    yield Sleep("nap", "1 minute")
    return "done"


@pytest.mark.parametrize("backend", ["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_runs_under_flow_control_are_traced(
    otel: Captured, backend: str, request: pytest.FixtureRequest
) -> None:
    """Runs started with a concurrency_key and a priority, claimed the limited way (SPEC §16), are
    traced as any: their steps are children of their own start span, in the request's trace; the
    run a limit held back (parked) counts no claim delay for the time it waited for a place."""
    options: dict[str, Any] = {}
    if backend == "postgres":
        options = {"dsn": request.getfixturevalue("pg_dsn"), "schema": request.getfixturevalue("pg_schema")}
    with Harness([limited], clock=SimClock(), **options) as h:
        with tracer().start_as_current_span("request"):
            first = h.start_workflow(limited, {}, concurrency_key="acct", priority=10)
            second = h.start_workflow(limited, {}, concurrency_key="acct", priority=-3)
        h.run_until_idle()
        assert h.get_run(second.id).status == "pending"  # held back by the limits
        assert h.run_until_complete(first.id).output == "done"
        assert h.run_until_complete(second.id).output == "done"
        assert h.get_run(second.id).priority == -3
    (req,) = otel.spans("request")
    starts = {(s.attributes or {})["pgflow.run_id"]: s for s in otel.spans("pgflow.start_workflow")}
    steps = otel.spans("pgflow.step")
    for run in (first, second):
        start = starts[run.id]
        assert _parent_id(start) == req.context.span_id
        mine = [s for s in steps if (s.attributes or {})["pgflow.run_id"] == run.id]
        assert [(s.attributes or {})["pgflow.step_id"] for s in mine] == ["work"]  # a Sleep has no span
        for span in mine:
            assert span.context.trace_id == req.context.trace_id and _parent_id(span) == start.context.span_id
    assert otel.count("pgflow.runs", **{"pgflow.workflow_id": "otel-limited", "status": "completed"}) == 2
    (delays,) = otel.points("pgflow.claim.delay", **{"pgflow.workflow_id": "otel-limited"})
    assert delays.count == 4 and delays.max == 0  # the parked run's minute waiting for a place is not delay


def test_async_harness_traces_like_the_harness(otel: Captured) -> None:
    """The asyncio driver gives the same spans and metrics; the step span is current in async steps
    (tasks) and in sync ones (pool threads)."""

    async def scenario() -> str:
        async with AsyncHarness([two_steps, nested]) as h:
            with tracer().start_as_current_span("request"):
                run = await h.start_workflow(two_steps, {})
            assert (await h.run_until_complete(run.id)).output == 6
            other = await h.start_workflow(nested, {})
            assert (await h.run_until_complete(other.id)).output == "done"
            return run.id

    run_id = asyncio.run(scenario())
    (request,) = otel.spans("request")
    _check_two_steps(otel, request, run_id)
    _check_nested(otel)


# -- real engines on PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_engine_on_postgres(otel: Captured, pg_dsn: str, pg_schema: str) -> None:
    """The threaded Engine: the start's context goes through the database to the worker's spans;
    metrics after the run; the column holds the traceparent."""
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[two_steps, failing]) as engine:
        with tracer().start_as_current_span("request"):
            run = engine.start_workflow(two_steps, {})
        assert engine.wait_for_run(run.id, timeout="20s").output == 6
    (request,) = otel.spans("request")
    _check_two_steps(otel, request, run.id)
    with psycopg.connect(pg_dsn) as conn:
        found = conn.execute(
            f'SELECT trace_context FROM "{pg_schema}".runs WHERE id = %s', (run.id,)
        ).fetchone()
    assert found is not None and found[0]["traceparent"].startswith(f"00-{request.context.trace_id:032x}-")


@pytest.mark.postgres
def test_async_engine_on_postgres(otel: Captured, pg_dsn: str, pg_schema: str) -> None:
    """The AsyncEngine: the same spans and metrics, a failing step's error status included."""

    async def scenario() -> tuple[str, str]:
        async with pgflow.AsyncEngine(pg_dsn, schema=pg_schema, workflows=[two_steps, failing]) as engine:
            with tracer().start_as_current_span("request"):
                run = await engine.start_workflow(two_steps, {})
            assert (await engine.wait_for_run(run.id, timeout="20s")).output == 6
            bad = await engine.start_workflow(failing, {})
            assert (await engine.wait_for_run(bad.id, timeout="20s")).status == "failed"
            return run.id, bad.id

    run_id, bad_id = asyncio.run(scenario())
    (request,) = otel.spans("request")
    _check_two_steps(otel, request, run_id)
    failed = _of(otel.spans("pgflow.step"), "otel-failing")
    assert [s.status.status_code for s in failed] == [StatusCode.ERROR, StatusCode.ERROR]
    assert all((s.attributes or {})["pgflow.run_id"] == bad_id for s in failed)
    assert otel.count("pgflow.runs", **{"pgflow.workflow_id": "otel-failing", "status": "failed"}) == 1


# -- nothing without the extra -----------------------------------------------------------------------------

BLOCKER = """
import importlib.abc, sys

class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
"""

WITHOUT_THE_EXTRA = """
import pgflow
from pgflow import Run, workflow
from pgflow.testing import Harness

def add(a, b):
    return a + b

@workflow("plain")
def plain(ctx):
    a = yield Run("a", add, 1, 2)
    return a

with Harness([plain]) as h:
    run = h.start_workflow(plain, {})
    assert h.run_until_complete(run.id).output == 3
    h.cancel_workflow(h.start_workflow(plain, {}).id)
    assert h.store.get(run.id, None)[0].trace_context is None
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
print("ok")
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.mark.process
def test_without_the_extra_pgflow_imports_no_opentelemetry_module() -> None:
    """opentelemetry made unimportable: pgflow imports, runs and cancels workflows, and loads none of it."""
    done = _python(textwrap.dedent(BLOCKER) + "import sys\n" + textwrap.dedent(WITHOUT_THE_EXTRA))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.process
def test_importing_pgflow_imports_no_opentelemetry_module_even_when_installed() -> None:
    """With the API installed, importing pgflow loads none of it: only a start or a run does."""
    code = "import sys, pgflow, pgflow.testing\nprint(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
