"""``pgflow prune`` (SPEC §15), run for real in subprocesses against the test database.

The runs are made with a ``Harness`` whose simulated clock starts 40 days ago, so the command, on the
real clock, finds them old.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pendulum
import psycopg
import pytest

import pgflow
from pgflow import Run, WaitFor, workflow
from pgflow.testing import Harness, SimClock

pytestmark = [pytest.mark.postgres, pytest.mark.process]


def _one() -> int:
    return 1


@workflow("prune-done")
def done_wf(ctx: pgflow.Context[Any]) -> Any:
    return (yield Run("one", _one))


@workflow("prune-other")
def other_wf(ctx: pgflow.Context[Any]) -> Any:
    return (yield Run("one", _one))


@workflow("prune-waiting")
def waiting_wf(ctx: pgflow.Context[Any]) -> Any:
    return (yield WaitFor("go", event="go"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "pgflow", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def history(pg_dsn: str, pg_schema: str) -> dict[str, list[str]]:
    """Runs made 40 days ago (3 completed of prune-done, 1 cancelled, 1 of prune-other for resource
    r1, 1 still waiting) and 1 completed yesterday; their ids by kind."""
    clock = SimClock(pendulum.now("UTC").subtract(days=40))
    found: dict[str, list[str]] = {}
    with Harness([done_wf, other_wf, waiting_wf], dsn=pg_dsn, schema=pg_schema, clock=clock) as h:
        found["old"] = [h.start_workflow(done_wf).id for _ in range(3)]
        found["other"] = [h.start_workflow(other_wf, resource_id="r1").id]
        found["live"] = [h.start_workflow(waiting_wf).id]
        h.run_until_idle()
        found["cancelled"] = [h.cancel_workflow(h.start_workflow(done_wf).id).id]
        clock.advance("39d")
        found["young"] = [h.start_workflow(done_wf).id]
        h.run_until_idle()
    return found


def left(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(f'SELECT id FROM "{schema}".runs').fetchall()}


def test_prune_dry_run_then_filters_then_everything_old(
    history: dict[str, list[str]], pg_dsn: str, pg_schema: str
) -> None:
    """--dry-run counts and deletes nothing; --status, --workflow and --resource narrow it; then the
    old terminal runs go and the live and young ones stay (text and --json)."""
    db = ["--dsn", pg_dsn, "--schema", pg_schema]
    everything = set().union(*history.values())
    dry = cli("prune", "--older-than", "30d", "--dry-run", *db)
    assert dry.returncode == 0, dry.stderr
    assert (
        dry.stdout.strip()
        == "Would delete 5 runs that ended more than 4 weeks 2 days ago (dry run: nothing deleted)"
    )
    assert left(pg_dsn, pg_schema) == everything
    dry_json = cli("prune", "--older-than", "30d", "--dry-run", "--status", "cancelled", "--json", *db)
    assert json.loads(dry_json.stdout) == {"runs": 1, "dry_run": True}

    cancelled = cli("prune", "--older-than", "30d", "--status", "failed,cancelled", "--json", *db)
    assert json.loads(cancelled.stdout) == {"runs": 1, "dry_run": False}
    scoped = cli("prune", "--older-than", "30d", "--workflow", "prune-other", "--resource", "r2", *db)
    assert scoped.stdout.strip() == "Deleted 0 runs that ended more than 4 weeks 2 days ago"
    scoped = cli("prune", "--older-than", "30d", "--workflow", "prune-other", "--resource", "r1", *db)
    assert scoped.stdout.strip() == "Deleted 1 run that ended more than 4 weeks 2 days ago"
    rest = cli("prune", "--older-than", "720h", *db)
    assert rest.returncode == 0 and rest.stdout.startswith("Deleted 3 runs"), rest.stdout
    assert left(pg_dsn, pg_schema) == set(history["live"] + history["young"])
    assert "Deleted 1 run " in cli("prune", "--older-than", "1h", *db).stdout  # the young one
    assert left(pg_dsn, pg_schema) == set(history["live"])


def test_prune_usage_errors_exit_2_and_delete_nothing(
    history: dict[str, list[str]], pg_dsn: str, pg_schema: str
) -> None:
    """A missing or bad --older-than, a live or unknown --status: usage errors (exit 2), nothing
    deleted; a bad id is one error line (exit 1)."""
    db = ["--dsn", pg_dsn, "--schema", pg_schema]
    before = left(pg_dsn, pg_schema)
    for args in (
        (), ("--older-than", "0s"), ("--older-than", "soon"), ("--older-than", "-3d"),
        ("--older-than", "30d", "--status", "running"), ("--older-than", "30d", "--status", "nope"),
        ("--older-than", "30d", "--status", ","),
    ):  # fmt: skip
        result = cli("prune", *args, *db)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == "" and "usage: pgflow prune" in result.stderr
    bad_id = cli("prune", "--older-than", "30d", "--workflow", "w" * 300, *db)
    assert bad_id.returncode == 1 and bad_id.stderr.count("\n") == 1 and "workflow_id" in bad_id.stderr
    assert left(pg_dsn, pg_schema) == before


def test_prune_never_creates_a_schema(pg_dsn: str, pg_schema: str) -> None:
    """Like every command on an existing schema, prune (even a dry run) on a schema without pgflow
    tables exits 1 naming the nearest pgflow schema, and creates nothing."""
    with Harness([done_wf], dsn=pg_dsn, schema=pg_schema):
        pass  # the real schema exists
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    for extra in ((), ("--dry-run",)):
        result = cli("prune", "--older-than", "30d", *extra, "--dsn", pg_dsn, "--schema", pg_schema + "x")
        assert result.returncode == 1, result.stderr
        assert "has no pgflow tables" in result.stderr and repr(pg_schema) in result.stderr
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        after = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert after == before


def test_prune_help_names_every_option() -> None:
    result = cli("prune", "--help")
    assert result.returncode == 0
    for option in ("--older-than", "--status", "--workflow", "--resource", "--dry-run", "1,000"):
        assert option in result.stdout
