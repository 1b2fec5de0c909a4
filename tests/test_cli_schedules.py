"""``pgflow schedules [list|pause|resume|delete] [ID]`` (SPEC §15, §16), run for real in subprocesses."""

from __future__ import annotations

import json
from typing import Any

import pytest

import pgflow
from pgflow import workflow
from pgflow.testing import Harness, SimClock
from test_cli import _assert_one_error_line, _schemas, cli

pytestmark = [pytest.mark.postgres, pytest.mark.process]


@workflow("cli-nightly")
def nightly(ctx: pgflow.Context[Any]) -> Any:
    return None
    yield


@pytest.fixture
def db(pg_dsn: str, pg_schema: str) -> list[str]:
    return ["--dsn", pg_dsn, "--schema", pg_schema]


@pytest.fixture
def two_schedules(pg_dsn: str, pg_schema: str) -> None:
    with Harness([nightly], dsn=pg_dsn, schema=pg_schema, clock=SimClock("2026-01-01T00:00:00Z")) as h:
        h.create_schedule("nightly", nightly, "0 2 * * *", timezone="Europe/Paris", input={"full": True})
        h.create_schedule("quarter", nightly, "*/15 * * * *", catch_up="none")


def test_list_shows_the_schedules(db: list[str], two_schedules: None) -> None:
    text = cli("schedules", *db)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "WORKFLOW", "CRON"]
    assert lines[1].startswith("nightly") and "Europe/Paris" in lines[1] and "2026-01-01 01:00:00" in lines[1]
    assert lines[2].startswith("quarter") and "none" in lines[2] and "active" in lines[2]
    assert lines[-1] == "2 schedules"
    listed = json.loads(cli("schedules", "list", "--json", *db).stdout)
    assert [s["schedule_id"] for s in listed] == ["nightly", "quarter"]
    assert listed[0] | {"last_run_id": None} == {
        "schedule_id": "nightly", "workflow_id": "cli-nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris",
        "input": {"full": True}, "catch_up": "latest", "paused": False, "next_tick_at": "2026-01-01T01:00:00+00:00",
        "last_tick_at": None, "last_run_id": None,
    }  # fmt: skip
    one = json.loads(cli("schedules", "list", "quarter", "--json", *db).stdout)
    assert one["schedule_id"] == "quarter"


def test_pause_resume_and_delete(db: list[str], two_schedules: None, pg_dsn: str, pg_schema: str) -> None:
    paused = cli("schedules", "pause", "nightly", *db)
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    assert json.loads(cli("schedules", "list", "nightly", "--json", *db).stdout)["paused"] is True
    assert "paused" in cli("schedules", *db).stdout.splitlines()[1]
    resumed = cli("schedules", "resume", "nightly", "--json", *db)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False
    deleted = cli("schedules", "delete", "quarter", *db)
    assert deleted.returncode == 0 and "Deleted schedule 'quarter'" in deleted.stdout
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        assert [s.schedule_id for s in client.list_schedules()] == ["nightly"]
    assert (
        cli("schedules", "delete", "nightly", "--json", *db).stdout.strip() == '{\n  "deleted": "nightly"\n}'
    )
    assert "No schedules yet" in cli("schedules", *db).stdout


def test_unknown_ids_and_missing_ids(db: list[str], two_schedules: None) -> None:
    for verb in ("pause", "resume", "delete", "list"):
        result = cli("schedules", verb, "nope", *db)
        _assert_one_error_line(result)
        assert "unknown schedule 'nope'" in result.stderr
    for verb in ("pause", "resume", "delete"):
        assert cli("schedules", verb, *db).returncode == 2
    assert cli("schedules", "frobnicate", *db).returncode == 2


def test_an_empty_schema_has_no_schedules(db: list[str]) -> None:
    assert cli("migrate", *db).returncode == 0
    result = cli("schedules", *db)
    assert result.returncode == 0 and "No schedules yet" in result.stdout
    assert json.loads(cli("schedules", "--json", *db).stdout) == []


def test_schedules_list_never_creates_a_schema(db: list[str], pg_dsn: str, pg_schema: str) -> None:
    """A read: on a schema without pgflow tables it exits 1 naming the nearest pgflow schema, and
    pg_namespace is unchanged (the steering verbs do not create one either)."""
    assert cli("migrate", *db).returncode == 0
    typo = ["--dsn", pg_dsn, "--schema", pg_schema + "x"]
    before = _schemas(pg_dsn)
    for args in (("schedules",), ("schedules", "list"), ("schedules", "pause", "nightly")):
        result = cli(*args, *typo)
        _assert_one_error_line(result)
        assert "has no pgflow tables" in result.stderr and repr(pg_schema) in result.stderr
    assert _schemas(pg_dsn) == before
