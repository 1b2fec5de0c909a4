"""Connections heal (SPEC §13): pooled connections broken by a server restart or failover never
fail a call once the server accepts connections again."""

from __future__ import annotations

import time
from typing import Any

import pendulum
import psycopg
import pytest
from psycopg_pool import ConnectionPool

import pgflow
from pgflow.postgres import PostgresStore
from pgflow.postgres.pools import make_pool
from pgflow.store import NewRun

pytestmark = pytest.mark.postgres
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


def _kill_pool_connections(dsn: str, pool: ConnectionPool[Any]) -> int:
    """Terminate every server session the pool holds, as a restart would; returns how many."""
    with pool.connection() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute("SELECT count(*) FROM pg_terminate_backend(%s) AS t WHERE t", (pid,)).fetchone()
    time.sleep(0.2)  # the pool's idle connection is broken now, and it does not know
    return int(row[0]) if row else 0


def test_a_read_on_a_broken_connection_is_retried_once(pg_dsn: str, pg_schema: str) -> None:
    """A read that fails on a broken connection is retried on a fresh one (even in a pool that
    checks nothing, a caller's)."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True) as pool:
        store = PostgresStore(pool, pg_schema)
        store.migrate()
        store.start_run(NewRun("r1", "wf", None, None, 0, 1.0, None, None, T0))
        assert _kill_pool_connections(pg_dsn, pool) == 1
        assert store.get("r1", None)[0].id == "r1"


def test_a_write_on_a_broken_connection_is_not_retried(pg_dsn: str, pg_schema: str) -> None:
    """A write that fails on a broken connection is a StorageError (it may or may not have happened
    on the server: retrying could double it); the next call works."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True) as pool:
        store = PostgresStore(pool, pg_schema)
        store.migrate()
        _kill_pool_connections(pg_dsn, pool)
        with pytest.raises(pgflow.StorageError):
            store.start_run(NewRun("r1", "wf", None, None, 0, 1.0, None, None, T0))
        store.start_run(NewRun("r2", "wf", None, None, 0, 1.0, None, None, T0))
        assert store.get("r2", None)[0].id == "r2"


def test_pools_pgflow_builds_check_idle_connections(pg_dsn: str, pg_schema: str) -> None:
    """A pool pgflow builds hands out no connection a restart broke: even a write succeeds."""
    pool = make_pool(pg_dsn, max_size=1, name="healing")
    try:
        store = PostgresStore(pool, pg_schema)
        store.migrate()
        assert _kill_pool_connections(pg_dsn, pool) == 1
        store.start_run(NewRun("r1", "wf", None, None, 0, 1.0, None, None, T0))
        assert store.get("r1", None)[0].id == "r1"
    finally:
        pool.close()


def test_a_client_survives_its_connections_being_killed(pg_dsn: str, pg_schema: str) -> None:
    """Every call of a Client works after all its server sessions (pool and LISTEN) were killed;
    wait_for_run still wakes on a change."""
    with pgflow.Client(pg_dsn, schema=pg_schema) as client, pgflow.Client(pg_dsn, schema=pg_schema) as other:
        ref = pgflow.ref("somewhere")
        run = client.start_workflow(ref, {"n": 1})
        client.wait_for_run(run.id, until="pending", timeout="1s")  # the LISTEN connection is open
        store: Any = client._ops_store()
        pids = [store._hub._conn.info.backend_pid]  # the LISTEN connection
        with store._pool.connection() as conn:
            pids.append(conn.info.backend_pid)
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        time.sleep(0.3)
        assert client.get_run(run.id).status == "pending"
        assert client.get_runs().items[0].id == run.id
        other.cancel_workflow(run.id)
        assert client.wait_for_run(run.id, timeout="5s").status == "cancelled"
