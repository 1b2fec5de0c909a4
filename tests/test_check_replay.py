"""Checking new code before deploying it (SPEC §14): ``check_replay`` and ``pgflow check`` report
exactly the runs the new code no longer replays, executing no step; ``pgflow export`` and
``pgflow.testing.replay`` turn real histories into unit-test fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pendulum
import pytest

import pgflow
from pgflow import Run, WaitFor, workflow
from pgflow.testing import Harness, SimClock, replay

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
CALLS: Counter[str] = Counter()


def effect(name: str) -> str:
    CALLS[name] += 1
    return name


def _v1(ctx: Any) -> Flow:
    yield Run("charge", effect, "charge")
    if ctx.input.get("vip"):
        yield Run("gift", effect, "gift")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")
    return "shipped"


def _v2(ctx: Any) -> Flow:  # renames "gift": VIP runs that already got one diverge
    yield Run("charge", effect, "charge")
    if ctx.input.get("vip"):
        yield Run("gift-card", effect, "gift")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")
    return "shipped"


V1, V2 = workflow("order")(_v1), workflow("order")(_v2)


def _mixed(h: Harness) -> tuple[list[str], list[str]]:
    """Three plain runs and two VIP runs, all waiting for approval; plus one completed VIP run."""
    plain = [h.start_workflow(V1, {"vip": False}).id for _ in range(3)]
    vip = [h.start_workflow(V1, {"vip": True}).id for _ in range(2)]
    done = h.start_workflow(V1, {"vip": True}).id
    h.run_until_idle()
    h.trigger_event(done, "approved")
    h.run_until_idle()
    return plain, vip


def test_check_replay_reports_exactly_the_diverging_runs_and_executes_nothing() -> None:
    """Of a mixed set, exactly the runs whose history the new code does not replay are reported,
    with NonDeterminismError; no step function is called and nothing is written."""
    with Harness(workflows=[V1], clock=SimClock(T0)) as h:
        _plain, vip = _mixed(h)
        before = {r.id: r for r in h.get_runs(limit=100).items}
        CALLS.clear()
        report = pgflow.check_replay(h, [V2])
        after = {r.id: r for r in h.get_runs(limit=100).items}
    assert report.checked == 5 and not report.ok
    assert sorted(d.run_id for d in report.diverged) == sorted(vip)
    assert {d.error_type for d in report.diverged} == {"NonDeterminismError"}
    assert all("'gift'" in d.message and "gift-card" in d.message for d in report.diverged)
    assert Counter() == CALLS and after == before


def test_check_replay_of_unchanged_code_finds_nothing() -> None:
    """The code the runs were recorded with replays every history."""
    with Harness(workflows=[V1], clock=SimClock(T0)) as h:
        _mixed(h)
        report = pgflow.check_replay(h, [V1], statuses=["paused", "completed"])
    assert report.ok and report.checked == 6


def test_check_replay_filters_and_limits() -> None:
    """statuses, workflow_ids and limit select what is checked; unknown arguments are named errors."""
    with Harness(workflows=[V1], clock=SimClock(T0)) as h:
        _mixed(h)
        assert pgflow.check_replay(h, [V2], statuses="completed").diverged[0].workflow_id == "order"
        assert pgflow.check_replay(h, [V2], limit=2).checked == 2
        with pytest.raises(pgflow.InvalidArgumentError):
            pgflow.check_replay(h, [V2], workflow_ids=["nope"])
        with pytest.raises(pgflow.InvalidArgumentError):
            pgflow.check_replay(object(), [V2])


def test_an_exported_history_replays_in_a_unit_test(tmp_path: Path) -> None:
    """A run's export (the --json form of show) replays on the same code to the same state, and to a
    NonDeterminismError on code that diverges; as a dict, a JSON string or a file."""
    with Harness(workflows=[V1], clock=SimClock(T0)) as h:
        run_id = h.start_workflow(V1, {"vip": True}).id
        h.run_until_idle()
        from pgflow.cli_render import run_to_json

        exported = run_to_json(h.get_run(run_id))
    fixture = tmp_path / "vip-order.json"
    fixture.write_text(json.dumps(exported))
    for history in (exported, json.dumps(exported), fixture, str(fixture)):
        replayed = replay(V1, history)
        assert replayed.status == "paused" and replayed.waiting is not None
        assert replayed.waiting.step_id == "approve" and list(replayed.timeline) == [
            "charge",
            "gift",
            "approve",
        ]
    with pytest.raises(pgflow.NonDeterminismError):
        replay(V2, exported)
    with pytest.raises(pgflow.InvalidArgumentError):
        replay(V1, {"not": "an export"})


# -- the command line, on PostgreSQL ----------------------------------------------------------------------

MODULE_V2 = """
from pgflow import Run, WaitFor, workflow

def effect(name):
    raise AssertionError("pgflow check executed a step")

@workflow("order")
def order(ctx):
    yield Run("charge", effect, "charge")
    if ctx.input.get("vip"):
        yield Run("gift-card", effect, "gift")
    yield WaitFor("approve", event="approved")
    yield Run("ship", effect, "ship")
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "pgflow", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)  # fmt: skip


@pytest.mark.postgres
@pytest.mark.process
def test_pgflow_check_and_export_on_postgres(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    """`pgflow check` exits 1 and prints each diverging run (0 when none diverge); `pgflow export`
    prints the run and its history as JSON that replays."""
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[V1]) as engine:
        plain = engine.start_workflow(V1, {"vip": False}).id
        vip = engine.start_workflow(V1, {"vip": True}).id
        for run_id in (plain, vip):
            engine.wait_for_run(run_id, until="paused", timeout="10s")
    (tmp_path / "orders_v2.py").write_text(textwrap.dedent(MODULE_V2))
    db = ["--dsn", pg_dsn, "--schema", pg_schema]
    diverged = _cli("check", "orders_v2", *db, cwd=tmp_path)
    assert diverged.returncode == 1, diverged.stderr
    assert f"DIVERGED {vip}" in diverged.stdout and plain not in diverged.stdout
    assert "checked 2 runs" in diverged.stdout and "1 run diverged" in diverged.stdout
    only_plain = _cli("check", "orders_v2", "--status", "completed", *db, cwd=tmp_path)
    assert only_plain.returncode == 0 and "checked 0 runs" in only_plain.stdout
    exported = _cli("export", vip, *db, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert replay(V1, exported.stdout).waiting is not None
    with pytest.raises(pgflow.NonDeterminismError):
        replay(V2, exported.stdout)
