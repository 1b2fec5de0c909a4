"""Shared test setup: Hypothesis profiles and PostgreSQL fixtures.

Postgres: the fixtures of pgflow's own pytest plugin (``pgflow.testing.pytest_plugin``, the one
applications get): ``PGFLOW_TEST_DSN`` if set, else ONE embedded server per test session (started
lazily, only when a test asks for ``pg_dsn``). Each test gets its own schema via ``pg_schema``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pendulum
import pytest
from hypothesis import HealthCheck, settings

from pgflow.testing import Harness, SimClock, pytest_plugin

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
def pytest_configure(config: pytest.Config) -> None:
    """The plugin comes in through its ``pytest11`` entry point; a checkout installed before that
    entry point existed (a stale editable install) gets it registered here instead."""
    manager = config.pluginmanager
    if not manager.is_registered(pytest_plugin) and not manager.is_blocked("pgflow"):
        manager.register(pytest_plugin, "pgflow")


@pytest.fixture(scope="session")
def pg_server_dsn(pgflow_dsn: str) -> str:
    """DSN of the session's PostgreSQL server: the plugin's ``pgflow_dsn``."""
    return pgflow_dsn


@pytest.fixture
def pg_dsn(pgflow_dsn: str) -> str:
    """A DSN for the test's PostgreSQL server (shared by the session)."""
    return pgflow_dsn


@pytest.fixture
def pg_schema(pgflow_schema: str) -> str:
    """A fresh, unique schema name (not created: migrations or the test create it), dropped afterwards."""
    return pgflow_schema


# -- a Harness on both stores -------------------------------------------------------------------------

HARNESS_T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness_on_both_stores(request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """``make(*workflows, **options)``: a Harness on a simulated clock at HARNESS_T0, on the memory
    store and (postgres-marked) on PostgreSQL in the test's schema; closed after the test."""
    made: list[Harness] = []

    def make(*workflows: Any, **options: Any) -> Harness:
        if request.param == "postgres":
            options |= {
                "dsn": request.getfixturevalue("pg_dsn"),
                "schema": request.getfixturevalue("pg_schema"),
            }
        h = Harness(workflows=workflows, clock=SimClock(HARNESS_T0), **options)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
