"""Migrations and named SQL of the Postgres store: declared schema, concurrency, idempotency."""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pgflow.cli_base import _require_pgflow_tables
from pgflow.errors import PgflowError
from pgflow.postgres import PostgresStore
from pgflow.postgres.migrate import (
    applied_version,
    applied_versions,
    latest_version,
    load_migrations,
    lock_key,
    migrate,
)
from pgflow.postgres.queries import load_queries, parse_queries
from pgflow.records import StepRecord
from pgflow.store import RunRow

RUN_COLUMNS = {f.name for f in attrs.fields(RunRow)} - {"waiting"} | {
    "waiting_step_id",
    "waiting_kind",
    "waiting_event",
    "waiting_wake_at",
}
STEP_COLUMNS = {f.name for f in attrs.fields(StepRecord)} | {"run_id", "pos"}
EVENT_COLUMNS = {"id", "run_id", "name", "data", "created_at", "consumed_by_step", "consumed_at"}
INDEXES = {
    "runs_pkey",
    "runs_idempotency_key_key",
    "runs_claim_idx",
    "runs_lease_idx",
    "runs_created_idx",
    "runs_resource_idx",
    "runs_workflow_idx",
    "runs_parent_idx",
    "runs_ready_idx",  # 0003_flow_control
    "runs_slots_idx",
    "runs_parked_key_idx",
    "runs_parked_workflow_idx",
    "runs_ended_idx",  # 0005_retention
    "steps_pkey",
    "events_pkey",
    "events_unconsumed_idx",
    "events_run_idx",
    "workflows_pkey",
    "schedules_pkey",
    "schedules_due_idx",
    "schema_version_pkey",
}
SCHEDULE_COLUMNS = {
    "id", "workflow_id", "cron", "timezone", "input", "catch_up", "paused", "next_tick_at",
    "last_tick_at", "last_run_id", "created_at", "updated_at",
}  # fmt: skip


def _columns(conn: psycopg.Connection[Any], schema: str, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.postgres
def test_migrations_create_the_declared_schema(pg_dsn: str, pg_schema: str) -> None:
    """Applying the migrations yields every declared table, column and index."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert migrate(conn, pg_schema) == [m.version for m in load_migrations()]
        assert _columns(conn, pg_schema, "runs") == RUN_COLUMNS
        assert _columns(conn, pg_schema, "steps") == STEP_COLUMNS
        assert _columns(conn, pg_schema, "events") == EVENT_COLUMNS
        assert _columns(conn, pg_schema, "workflows") == {
            "id", "steps", "settings", "registered_at", "concurrency", "key_concurrency",
        }  # fmt: skip
        assert _columns(conn, pg_schema, "schedules") == SCHEDULE_COLUMNS
        assert _columns(conn, pg_schema, "schema_version") == {"version", "name", "applied_at"}
        indexes = {
            r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (pg_schema,))
        }
        assert indexes == INDEXES
        claim_index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'runs_claim_idx'",
            (pg_schema,),
        ).fetchone()
        assert claim_index is not None and "WHERE (status = ANY" in claim_index[0]
        assert applied_version(conn, pg_schema) == latest_version() == load_migrations()[-1].version


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["migrate", "store"])
def test_a_version_below_the_highest_applied_one_is_not_skipped(
    pg_dsn: str, pg_schema: str, how: str
) -> None:
    """A schema that has a later version but lacks an earlier one (development branches merged in
    another order than their numbers) gets the missing one, by ``migrate`` and by a store alike; a
    read-only CLI command names what is missing."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        gap = 5  # retention's index: undone here as if the file had never been applied
        assert gap < latest_version()
        conn.execute(f'DROP INDEX "{pg_schema}".runs_ended_idx')
        conn.execute(f'DELETE FROM "{pg_schema}".schema_version WHERE version = %s', (gap,))
        assert applied_version(conn, pg_schema) == latest_version()
        with pytest.raises(PgflowError, match=rf"lacks migration\(s\) {gap} of this pgflow"):
            _require_pgflow_tables(pg_dsn, pg_schema)
        if how == "migrate":
            assert migrate(conn, pg_schema) == [gap]
        else:
            with ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True) as pool:
                PostgresStore(pool, pg_schema).migrate()
        assert applied_versions(conn, pg_schema) == {m.version for m in load_migrations()}
        assert conn.execute("SELECT to_regclass(%s)", (f'"{pg_schema}".runs_ended_idx',)).fetchone() != (
            None,
        )
        assert migrate(conn, pg_schema) == []


@pytest.mark.postgres
def test_steps_has_a_column_for_every_step_record_field(pg_dsn: str, pg_schema: str) -> None:
    """Every StepRecord field is stored: none is lost on the way through the Postgres store."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        assert _columns(conn, pg_schema, "steps") >= {f.name for f in attrs.fields(StepRecord)}


@pytest.mark.postgres
def test_status_check_constraint(pg_dsn: str, pg_schema: str) -> None:
    """The runs.status column rejects values that are not a RunStatus."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                f'INSERT INTO "{pg_schema}".runs (id, workflow_id, status, created_at, updated_at)'
                " VALUES ('r', 'w', 'bogus', '2024-01-01Z', '2024-01-01Z')"
            )


@pytest.mark.postgres
def test_ten_processes_migrating_at_once(pg_dsn: str, pg_schema: str) -> None:
    """Ten connections migrating a fresh schema at once all succeed; the migration runs once."""
    barrier = threading.Barrier(10)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_dsn) as conn:
                barrier.wait()
                results.append(migrate(conn, pg_schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every = [m.version for m in load_migrations()]
    assert sorted(results, key=len) == [[]] * 9 + [every]
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f'SELECT version FROM "{pg_schema}".schema_version ORDER BY version').fetchall()
    assert rows == [(v,) for v in every]


@pytest.mark.postgres
def test_migrate_again_is_a_no_op(pg_dsn: str, pg_schema: str) -> None:
    """Re-running migrate (also through PostgresStore.migrate) applies nothing."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStore(pool, schema=pg_schema)
        store.migrate()
        store.migrate()
        with pool.connection() as conn:
            assert migrate(conn, pg_schema) == []
            count = conn.execute(f'SELECT count(*) FROM "{pg_schema}".schema_version').fetchone()
            assert count == (len(load_migrations()),)


@pytest.mark.postgres
def test_schema_name_is_quoted(pg_dsn: str) -> None:
    """A schema name needing quotes (mixed case, spaces, quotes) works and injects nothing."""
    schema = 'Odd "Name"; x'
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            assert migrate(conn, schema) == [m.version for m in load_migrations()]
            assert "runs" in {
                r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
            }
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "Odd ""Name""; x" CASCADE')


def test_lock_key_is_per_schema_and_stable() -> None:
    """The advisory lock key is a signed 64-bit value derived from the schema name only."""
    assert lock_key("pgflow") == lock_key("pgflow") != lock_key("other")
    assert -(2**63) <= lock_key("pgflow") < 2**63


def test_named_queries_are_documented() -> None:
    """Every named query has a description line and a body."""
    queries = load_queries()
    assert {"claim", "commit_keep_running", "heartbeat", "next_due", "upsert_steps"} <= set(queries)
    assert all(q.doc and q.text for q in queries.values())
    with pytest.raises(ValueError):
        parse_queries("-- name: broken\nSELECT 1")


def test_sql_never_reads_the_server_clock() -> None:
    """No query or migration calls now()/current_timestamp: every time is a parameter."""
    root = resources.files("pgflow.postgres")
    texts = [root.joinpath("sql/queries.sql").read_text("utf-8")] + [m.text for m in load_migrations()]
    clock = re.compile(r"\b(now\s*\(|current_timestamp|current_date|localtimestamp|clock_timestamp)", re.I)
    assert not [t for t in texts if clock.search(t)]


def _documented_columns() -> dict[str, set[str]]:
    """The tables and columns listed in docs/sql.md (``## `table` …`` headings, then table rows)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "sql.md").read_text("utf-8")
    tables: dict[str, set[str]] = {}
    current = None
    for line in text.splitlines():
        if heading := re.match(r"^## `(\w+)`", line):
            current = tables.setdefault(heading.group(1), set())
        elif line.startswith("## "):
            current = None
        elif current is not None and (cell := re.match(r"^\| `(\w+)` \|", line)):
            current.add(cell.group(1))
    return tables


@pytest.mark.postgres
def test_docs_list_every_column(pg_dsn: str, pg_schema: str) -> None:
    """docs/sql.md documents exactly the tables and columns the migrations create."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        tables = [
            r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (pg_schema,))
        ]
        actual = {t: _columns(conn, pg_schema, t) for t in tables}
    assert _documented_columns() == actual
