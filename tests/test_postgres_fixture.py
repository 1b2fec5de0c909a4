"""The Postgres test fixtures work: a real server, and a private schema per test."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.postgres

_used: list[str] = []


def test_pg_schema_is_usable(pg_dsn: str, pg_schema: str) -> None:
    """A test can create its schema, write a row and read it back."""
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        table = sql.Identifier(pg_schema, "things")
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text NOT NULL)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (1, "widget"))
        row = conn.execute(sql.SQL("SELECT id, name FROM {}").format(table)).fetchone()
    assert row == (1, "widget")
    _used.append(pg_schema)


def test_pg_schema_is_fresh_and_dropped(pg_dsn: str, pg_schema: str) -> None:
    """Each test gets a new, not-yet-created schema; the previous test's schema was dropped."""
    assert pg_schema.startswith("pgflow_test_") and len(pg_schema) == 24
    assert pg_schema not in _used
    with psycopg.connect(pg_dsn) as conn:
        existing = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", ([pg_schema, *_used],)
        ).fetchall()
    assert existing == []


def test_pg_fixtures_are_the_plugins(pg_dsn: str, pg_server_dsn: str, pgflow_dsn: str) -> None:
    """pgflow's own fixtures wrap the pytest plugin's: one server per session, whichever is asked for."""
    assert pg_dsn == pg_server_dsn == pgflow_dsn
