"""The ``pgflow`` command line (SPEC §12), run for real in subprocesses against the test database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql

import pgflow
from pgflow import Pause, Run, WaitFor, workflow

pytestmark = [pytest.mark.postgres, pytest.mark.process]

RUN_FIELDS = {f.name for f in attrs.fields(pgflow.WorkflowRun)}
STEP_FIELDS = {f.name for f in attrs.fields(pgflow.StepRecord)}
PUBLIC_STEP_FIELDS = {
    "step_id", "kind", "status", "output", "error", "timed_out", "attempts", "started_at", "completed_at",
}  # fmt: skip


def _double(x: int) -> int:
    return x * 2


@workflow("cli-waiter")
def cli_waiter(ctx: pgflow.Context[Any]) -> Any:
    doubled = yield Run("double", _double, 21)
    data = yield WaitFor("await-go", event="go", timeout="1h")
    return {"doubled": doubled, "data": data}


@workflow("cli-pauser")
def cli_pauser(ctx: pgflow.Context[Any]) -> Any:
    yield Pause("hold-here")
    return "resumed"


def cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "pgflow", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.fixture
def db(pg_dsn: str, pg_schema: str) -> list[str]:
    """The global options that point the command at the test's schema."""
    return ["--dsn", pg_dsn, "--schema", pg_schema]


@pytest.fixture
def engine(pg_dsn: str, pg_schema: str) -> Iterator[pgflow.Engine]:
    """An in-process engine serving the test workflows, so runs move while the CLI looks at them."""
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[cli_waiter, cli_pauser], concurrency=4) as eng:
        yield eng


def _waiting_run(engine: pgflow.Engine) -> pgflow.WorkflowRun:
    run = engine.start_workflow(cli_waiter)
    return engine.wait_for_run(run.id, until={"paused"}, timeout="20s")


def _start_when_registered(
    client: pgflow.Client, proc: subprocess.Popen[str], workflow_id: str, input: Any = None
) -> pgflow.WorkflowRun:
    """Start a run of ``workflow_id`` as soon as the worker subprocess has registered it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return client.start_workflow(workflow_id, input)
        except pgflow.UnknownWorkflowError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"the worker never registered {workflow_id}"
            time.sleep(0.1)


def _assert_one_error_line(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgflow: error: ")


def test_migrate_creates_the_schema(db: list[str], pg_dsn: str, pg_schema: str) -> None:
    """`pgflow migrate` creates the schema's tables and exits 0; running it again is harmless."""
    first = cli("migrate", *db)
    assert first.returncode == 0, first.stderr
    assert pg_schema in first.stdout
    again = cli(*db, "--json", "migrate")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"migrated": True, "schema": pg_schema}
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        assert client.get_runs().items == []


def test_demo_json_completes_with_output(db: list[str]) -> None:
    """`pgflow demo --json` runs the onboarding workflow to completion and prints the final run."""
    result = cli("demo", "--json", *db)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["workflow_id"] == "pgflow-demo-onboarding"
    assert run["status"] == "completed"
    assert run["output"]["status"] == "active"
    assert isinstance(run["timeline"], list)
    assert [s["step_id"] for s in run["timeline"]] == [
        "create-account", "send-welcome", "await-confirmation", "cool-down", "verify-profile", "activate",
    ]  # fmt: skip
    assert all(s["status"] == "completed" for s in run["timeline"])


def test_demo_text_narrates_the_run(db: list[str]) -> None:
    """`pgflow demo` prints each step, the event it sends and the output, in a few seconds."""
    began = time.monotonic()
    result = cli(*db, "demo")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 30
    for text in (
        "create-account",
        "email-confirmed",
        "verify-profile",
        "activate",
        "completed",
        '"status": "active"',
    ):
        assert text in result.stdout
    assert "Traceback" not in result.stderr


def test_worker_serves_module_workflows_and_stops_on_sigterm(
    tmp_path: Path, db: list[str], pg_dsn: str, pg_schema: str
) -> None:
    """`pgflow worker MODULE` serves the module's workflows, logs runs (at --log-level debug), and
    exits 0 on SIGTERM."""
    (tmp_path / "tmpmod.py").write_text(
        textwrap.dedent(
            """
            from pgflow import Run, workflow

            def add(a, b):
                return a + b

            @workflow("cli-adder")
            def adder(ctx):
                total = yield Run("add", add, ctx.input["a"], ctx.input["b"])
                return {"total": total}
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgflow", "worker", "tmpmod", "--log-level", "debug", *db],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            run = _start_when_registered(client, proc, "cli-adder", {"a": 2, "b": 3})
            done = client.wait_for_run(run.id, timeout="20s")
        assert done.status == "completed"
        assert done.output == {"total": 5}
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "cli-adder" in err
    assert run.id in err  # at DEBUG, each run it executes is logged
    assert "Traceback" not in err


def test_worker_fires_module_schedules_and_takes_retention(
    tmp_path: Path, db: list[str], pg_dsn: str, pg_schema: str
) -> None:
    """`pgflow worker MODULE --retention 30d`: the module's Schedule objects (alone or in a list) are
    upserted and fired by the engine it builds, which prunes with that retention."""
    (tmp_path / "schedmod.py").write_text(
        textwrap.dedent(
            """
            import pgflow
            from pgflow import Run, workflow

            @workflow("cli-tick")
            def tick(ctx):
                return (yield Run("tick", lambda: "tock"))

            every_second = pgflow.Schedule("cli-every-second", tick, "* * * * * *")
            SCHEDULES = [pgflow.Schedule("cli-nightly", tick, "0 3 * * *", timezone="Europe/Paris")]
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgflow", "worker", "schedmod", "--retention", "30d", *db],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            deadline = time.monotonic() + 30
            while not client.get_runs(workflow_id="cli-tick", statuses=["completed"]).items:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no scheduled run completed"
                time.sleep(0.2)
            ids = [info.schedule_id for info in client.list_schedules()]
        assert ids == ["cli-every-second", "cli-nightly"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "schedules: cli-every-second, cli-nightly" in err


def test_worker_engine_attr_rejects_retention(tmp_path: Path) -> None:
    """`--retention` belongs to the engine a bare MODULE builds: with MODULE:ATTR it is a usage error."""
    (tmp_path / "engmod.py").write_text("import pgflow\nengine = pgflow.Engine('postgresql://unused/x')\n")
    result = cli("worker", "engmod:engine", "--retention", "30d", cwd=tmp_path)
    assert result.returncode == 2 and "--retention" in result.stderr, result.stderr


def test_worker_serves_an_engine_attr_as_configured(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    """`pgflow worker mod:engine` serves that Engine with its own dsn and schema."""
    (tmp_path / "engmod.py").write_text(
        textwrap.dedent(
            f"""
            import pgflow
            from pgflow import Run, workflow

            @workflow("cli-greeter")
            def greeter(ctx):
                return (yield Run("greet", str.upper, "hello"))

            engine = pgflow.Engine({pg_dsn!r}, schema={pg_schema!r}, workflows=[greeter], concurrency=2)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgflow", "worker", "engmod:engine"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with pgflow.Client(pg_dsn, schema=pg_schema) as client:
            run = _start_when_registered(client, proc, "cli-greeter")
            assert client.wait_for_run(run.id, timeout="20s").output == "HELLO"
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_worker_engine_attr_rejects_dsn_and_schema(tmp_path: Path, db: list[str]) -> None:
    """`pgflow worker mod:engine` with --dsn or --schema is a usage error (exit 2)."""
    (tmp_path / "engmod.py").write_text("import pgflow\nengine = pgflow.Engine('postgresql://unused/x')\n")
    before = cli("--dsn", db[1], "worker", "engmod:engine", cwd=tmp_path)
    assert before.returncode == 2, before.stderr
    assert "Engine" in before.stderr
    after = cli("worker", "engmod:engine", "--schema", "other", cwd=tmp_path)
    assert after.returncode == 2, after.stderr


def test_worker_unknown_module_is_one_error_line(tmp_path: Path, db: list[str]) -> None:
    """A worker module that does not exist is a pgflow error: exit 1 and one line on stderr."""
    _assert_one_error_line(cli("worker", "no_such_module_here", *db, cwd=tmp_path))


def test_runs_table_and_json(db: list[str], engine: pgflow.Engine) -> None:
    """`pgflow runs` prints a table newest first; --json prints items and cursor keys."""
    older = _waiting_run(engine)
    newer = engine.start_workflow(cli_pauser)
    engine.wait_for_run(newer.id, until={"paused"}, timeout="20s")

    table = cli("runs", *db)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    for column in ("ID", "WORKFLOW", "STATUS", "CURRENT STEP", "CREATED", "UPDATED"):
        assert column in header
    assert newer.id in rows[0] and older.id in rows[1]
    assert "await-go" in rows[1]

    result = cli("runs", "--json", *db)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert set(page) == {"items", "next_cursor", "prev_cursor", "has_more", "has_prev"}
    assert [item["id"] for item in page["items"]] == [newer.id, older.id]
    assert set(page["items"][0]) == RUN_FIELDS
    assert page["has_more"] is False and page["next_cursor"] is None

    first = json.loads(cli(*db, "--json", "runs", "--limit", "1").stdout)
    assert [item["id"] for item in first["items"]] == [newer.id]
    assert first["has_more"] is True and first["next_cursor"] == newer.id

    filtered = json.loads(cli("runs", "--workflow", "cli-waiter", "--status", "paused", "--json", *db).stdout)
    assert [item["id"] for item in filtered["items"]] == [older.id]
    none = json.loads(cli("runs", "--status", "completed", "--status", "failed", "--json", *db).stdout)
    assert none["items"] == []


def test_show_table_and_json(db: list[str], engine: pgflow.Engine) -> None:
    """`pgflow show` prints the run, its waiting state and timeline; --json uses the record field names."""
    run = _waiting_run(engine)
    text = cli("show", run.id, *db)
    assert text.returncode == 0, text.stderr
    for expected in (run.id, "cli-waiter", "paused", "'go'", "double", "await-go", "completed", "waiting"):
        assert expected in text.stdout
    for column in ("STEP", "KIND", "STATUS", "ATTEMPTS", "DURATION"):
        assert column in text.stdout

    result = cli("--json", "show", run.id, *db)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == RUN_FIELDS
    assert data["status"] == "paused"
    assert data["waiting"]["step_id"] == "await-go" and data["waiting"]["event"] == "go"
    assert data["error"] is None
    assert isinstance(data["created_at"], str) and "T" in data["created_at"]
    assert isinstance(data["timeline"], list)
    assert [s["step_id"] for s in data["timeline"]] == ["double", "await-go"]
    for record in data["timeline"]:
        assert set(record) == STEP_FIELDS
        assert set(record) >= PUBLIC_STEP_FIELDS
    assert data["timeline"][0]["output"] == 42
    assert data["timeline"][0]["status"] == "completed"


def test_trigger_delivers_the_event(db: list[str], engine: pgflow.Engine) -> None:
    """`pgflow trigger RUN EVENT --data JSON` wakes the run with that data (exit 0)."""
    run = _waiting_run(engine)
    result = cli("trigger", run.id, "go", "--data", '{"ok": true}', *db)
    assert result.returncode == 0, result.stderr
    assert run.id in result.stdout
    done = engine.wait_for_run(run.id, timeout="20s")
    assert done.status == "completed"
    assert done.output == {"doubled": 42, "data": {"ok": True}}


def test_pause_resume_and_fast_forward(db: list[str], engine: pgflow.Engine) -> None:
    """pause holds a run, resume releases it, fast-forward skips its wait with --data (exit 0 each)."""
    run = _waiting_run(engine)
    paused = cli("pause", run.id, "--json", *db)
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["held"] is True
    again = cli("pause", run.id, *db)
    _assert_one_error_line(again)  # already held: InvalidStateError

    resumed = cli("resume", run.id, "--json", *db)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["held"] is False

    forwarded = cli("fast-forward", run.id, "--data", '{"skipped": 1}', *db)
    assert forwarded.returncode == 0, forwarded.stderr
    done = engine.wait_for_run(run.id, timeout="20s")
    assert done.output == {"doubled": 42, "data": {"skipped": 1}}


def test_resume_completes_a_pause_step(db: list[str], engine: pgflow.Engine) -> None:
    """`pgflow resume` completes the Pause step a run is at."""
    run = engine.start_workflow(cli_pauser)
    engine.wait_for_run(run.id, until={"paused"}, timeout="20s")
    result = cli(*db, "resume", run.id)
    assert result.returncode == 0, result.stderr
    assert engine.wait_for_run(run.id, timeout="20s").output == "resumed"


def test_cancel_then_cancel_again_fails(db: list[str], engine: pgflow.Engine) -> None:
    """`pgflow cancel` cancels a run (exit 0); cancelling it again is a pgflow error (exit 1)."""
    run = _waiting_run(engine)
    result = cli("cancel", run.id, "--json", *db)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "cancelled"
    _assert_one_error_line(cli("cancel", run.id, *db))
    _assert_one_error_line(cli("trigger", run.id, "go", *db))


def test_unknown_run_is_one_error_line(db: list[str]) -> None:
    """Commands on an unknown run exit 1 with one `pgflow: error:` line and no traceback."""
    assert cli("migrate", *db).returncode == 0
    for args in (("show", "no-such-run"), ("cancel", "no-such-run"), ("trigger", "no-such-run", "go")):
        result = cli(*args, *db)
        _assert_one_error_line(result)
        assert "no-such-run" in result.stderr


def test_bad_data_json_is_a_usage_error(db: list[str]) -> None:
    """--data that is not JSON exits 2, for trigger and fast-forward."""
    assert cli("trigger", "some-run", "go", "--data", "{nope", *db).returncode == 2
    assert cli("fast-forward", "some-run", "--data", "not json", *db).returncode == 2


def test_usage_errors_exit_2(db: list[str]) -> None:
    """No command, an unknown command, a missing argument or a bad option value exit 2."""
    assert cli().returncode == 2
    assert cli("frobnicate").returncode == 2
    assert cli("show", *db).returncode == 2
    assert cli("runs", "--limit", "zero", *db).returncode == 2
    assert cli("runs", "--status", "sleeping", *db).returncode == 2


def test_global_options_before_or_after_the_command(db: list[str], engine: pgflow.Engine) -> None:
    """--dsn, --schema and --json work before the command, after it, or split around it."""
    run = _waiting_run(engine)
    dsn, schema = db[1], db[3]
    variants = [
        ["--dsn", dsn, "--schema", schema, "--json", "show", run.id],
        ["show", run.id, "--dsn", dsn, "--schema", schema, "--json"],
        ["--json", "--dsn", dsn, "show", "--schema", schema, run.id],
    ]
    for args in variants:
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert json.loads(result.stdout)["id"] == run.id
    other_schema = schema + "_other"
    try:
        other = cli("show", run.id, "--dsn", dsn, "--schema", other_schema)
        assert other.returncode == 1  # another schema does not see the run
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other_schema)))


def _schemas(dsn: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


def test_commands_on_a_schema_without_pgflow_tables_create_nothing(
    db: list[str], pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """runs, show, export, check and the actions never create or migrate a schema: on a schema without
    pgflow tables they exit 1 naming the nearest pgflow schema; pg_namespace is unchanged."""
    assert cli("migrate", *db).returncode == 0  # the real schema exists
    typo = ["--dsn", pg_dsn, "--schema", pg_schema + "x"]
    before = _schemas(pg_dsn)
    (tmp_path / "nothing.py").write_text("from pgflow import workflow\n\n@workflow\ndef w(ctx):\n    yield\n")
    for args in (("runs",), ("show", "r1"), ("export", "r1"), ("cancel", "r1"), ("check", "nothing")):
        result = cli(*args, *typo, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert "has no pgflow tables" in result.stderr and repr(pg_schema) in result.stderr, result.stderr
    assert _schemas(pg_dsn) == before


def test_the_embedded_default_is_named_and_never_created_by_a_read(tmp_path: Path) -> None:
    """With no database configured, a read command says which data directory it would use and exits 1
    when there is none there, instead of creating a fresh embedded database."""
    result = cli("runs", cwd=tmp_path)
    assert result.returncode == 1 and "no pgflow database here" in result.stderr
    assert str(tmp_path / ".pgflow") in result.stderr and not (tmp_path / ".pgflow").exists()


@workflow("cli-doubler")
def cli_doubler(ctx: pgflow.Context[Any]) -> Any:
    return {"doubled": (yield Run("double", _double, ctx.input))}


def test_start_with_wait_prints_the_finished_run(pg_dsn: str, pg_schema: str, db: list[str]) -> None:
    """`pgflow start WORKFLOW --input JSON --wait` starts a run of a registered workflow, waits until it
    ends and prints it (exit 0: completed); --idempotency-key gives the same run again; an unknown
    workflow is one error line (exit 1); bad --input JSON is a usage error (exit 2)."""
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[cli_doubler]):
        done = cli("start", "cli-doubler", "--input", "21", "--wait", "--timeout", "20s", "--json",
                   "--idempotency-key", "k1", *db)  # fmt: skip
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert run["status"] == "completed" and run["output"] == {"doubled": 42}
        again = cli("start", "cli-doubler", "--input", "5", "--idempotency-key", "k1", "--json", *db)
        assert again.returncode == 0 and json.loads(again.stdout)["id"] == run["id"]
        text = cli("start", "cli-doubler", "--input", "1", *db)
        assert text.returncode == 0 and "started run" in text.stdout and "cli-doubler" in text.stdout
    unknown = cli("start", "no-such-workflow", *db)
    _assert_one_error_line(unknown)
    assert "no-such-workflow" in unknown.stderr
    assert cli("start", "cli-doubler", "--input", "{nope", *db).returncode == 2


# -- pgflow retry ---------------------------------------------------------------------------------------

FIXABLE: dict[str, Any] = {"broken": True, "calls": []}


def _first(x: int) -> int:
    FIXABLE["calls"].append("first")
    return x + 1


def _second(x: int) -> int:
    FIXABLE["calls"].append("second")
    if FIXABLE["broken"]:
        raise ValueError("not fixed yet")
    return x * 10


@workflow("cli-fixable")
def cli_fixable(ctx: pgflow.Context[Any]) -> Any:
    first = yield Run("first", _first, 1)
    return (yield Run("second", _second, first))


def test_retry_re_drives_a_failed_run(db: list[str], pg_dsn: str, pg_schema: str) -> None:
    """`pgflow retry [--from-step S]` re-drives failed runs (text, --json); errors are one line."""
    FIXABLE.update(broken=True, calls=[])
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[cli_fixable], concurrency=2) as engine:
        runs = [engine.start_workflow(cli_fixable) for _ in range(2)]
        assert all(engine.wait_for_run(r.id, timeout="20s").status == "failed" for r in runs)
        _assert_one_error_line(cli("retry", runs[0].id, "--from-step", "nope", *db))
        FIXABLE.update(broken=False, calls=[])

        text = cli("retry", runs[0].id, *db)
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith(f"Retried run {runs[0].id} (cli-fixable): now ")
        as_json = cli("retry", runs[1].id, "--from-step", "first", "--json", *db)
        assert as_json.returncode == 0, as_json.stderr
        shown = json.loads(as_json.stdout)
        assert shown["id"] == runs[1].id and shown["error"] is None and shown["retry_count"] == 0

        done = [engine.wait_for_run(r.id, timeout="20s") for r in runs]
        assert [d.output for d in done] == [20, 20]
        assert sorted(FIXABLE["calls"]) == ["first", "second", "second"]  # run 0 replays "first"
        _assert_one_error_line(cli("retry", runs[0].id, *db))  # completed: InvalidStateError


# -- flow control in the CLI ---------------------------------------------------------------------------


@workflow("cli-one-at-a-time", key_concurrency=1)
def cli_one_at_a_time(ctx: pgflow.Context[Any]) -> Any:
    yield WaitFor("go", event="go")


def test_start_show_and_runs_display_keys_priorities_and_held_back_runs(
    pg_dsn: str, pg_schema: str, db: list[str]
) -> None:
    """`pgflow start --concurrency-key K --priority N`; `runs` shows KEY and PRIORITY; `show` says a
    run the key's limit holds back waits for a concurrency slot."""
    with pgflow.Engine(pg_dsn, schema=pg_schema, workflows=[cli_one_at_a_time]) as engine:
        first = json.loads(
            cli("start", "cli-one-at-a-time", "--concurrency-key", "acct-1", "--json", *db).stdout
        )
        engine.wait_for_run(first["id"], until=["paused"], timeout="20s")
        second = cli(
            "start", "cli-one-at-a-time", "--concurrency-key", "acct-1", "--priority", "7", "--json", *db
        )
        assert second.returncode == 0, second.stderr
        later = json.loads(second.stdout)
        assert later["concurrency_key"] == "acct-1" and later["priority"] == 7
        deadline = time.monotonic() + 20
        while "concurrency slot" not in (shown := cli("show", later["id"], *db)).stdout:
            assert time.monotonic() < deadline, shown.stdout
            time.sleep(0.2)
        assert "Conc. key   acct-1" in shown.stdout and "Priority    7" in shown.stdout
        table = cli("runs", *db).stdout
        assert "KEY" in table and "PRIORITY" in table and "acct-1" in table
        assert "waiting for a concurrency slot" not in cli("show", first["id"], *db).stdout
        assert cli("start", "cli-one-at-a-time", "--priority", "5000", *db).returncode == 1
