"""The claim statement stays an index lookup with history in the table (SPEC §13: expired leases are
claimed first, without sorting the backlog): EXPLAIN on a populated schema shows no sequential scan."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pendulum
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from pgflow.postgres import PostgresStore
from pgflow.postgres.migrate import migrate
from pgflow.postgres.queries import Queries

pytestmark = pytest.mark.postgres
NOW = pendulum.datetime(2030, 1, 1, tz="UTC")


def _populate(conn: psycopg.Connection[Any], schema: str, n: int) -> None:
    """n runs of each kind: ready, waiting on a timer, waiting for an event, leased (expired),
    leased (live), completed — as a busy production schema holds them; priorities 0, 10 and 20."""
    runs = sql.Identifier(schema, "runs")
    insert = sql.SQL(
        "INSERT INTO {} (id, workflow_id, status, created_at, updated_at, due_at, lease_owner, "
        "lease_expires_at, waiting_step_id, waiting_kind, priority) "
        "SELECT %(kind)s || '-' || g, 'wf', %(status)s, %(t)s, %(t)s, %(due)s, %(owner)s, %(expires)s, "
        "%(wait)s, %(wait_kind)s, (g %% 3) * 10 FROM generate_series(1, %(n)s) AS g"
    ).format(runs)
    kinds: list[dict[str, Any]] = [
        {"kind": "ready", "status": "pending", "due": NOW.subtract(minutes=5)},
        {"kind": "timer", "status": "paused", "due": NOW.add(days=1), "wait": "d", "wait_kind": "delay"},
        {"kind": "event", "status": "paused", "wait": "w", "wait_kind": "wait_for"},
        {"kind": "expired", "status": "running", "owner": "dead", "expires": NOW.subtract(seconds=10)},
        {"kind": "live", "status": "running", "owner": "alive", "expires": NOW.add(seconds=20)},
        {"kind": "done", "status": "completed"},
    ]
    for kind in kinds:
        params = {"due": None, "owner": None, "expires": None, "wait": None, "wait_kind": None, **kind}
        conn.execute(insert, {**params, "t": NOW.subtract(hours=1), "n": n})
    conn.execute(sql.SQL("ANALYZE {}").format(runs))


def test_the_claim_uses_indexes_on_a_populated_schema(pg_dsn: str, pg_schema: str) -> None:
    """With 60,000 runs of every kind, the claim reads ready runs and expired leases through their
    indexes: no sequential scan of runs, no sort of the backlog."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        _populate(conn, pg_schema, 10_000)
        params = {
            "workflow_ids": ["wf"], "now": NOW, "owner": "w1",
            "lease_expires_at": NOW.add(seconds=30), "runs_channel": "pgflow_runs_plan",
        }  # fmt: skip
        claim = Queries(pg_schema).render("claim", {"limit": sql.Literal(10)})
        plan = "\n".join(row[0] for row in conn.execute(b"EXPLAIN " + claim, params).fetchall())
    runs_scans = [line for line in plan.splitlines() if "on runs" in line or "runs_" in line]
    assert "Seq Scan on runs" not in plan, plan
    assert any("runs_ready_idx" in line for line in runs_scans), plan  # levels and ready, by priority
    assert any("runs_lease_idx" in line for line in runs_scans), plan
    print(plan)


def test_the_store_keeps_the_prepared_claim_plan_on_a_populated_schema(pg_dsn: str, pg_schema: str) -> None:
    """With 60,000 runs, PostgreSQL runs the store's prepared claim statement with its generic plan
    (planned once) instead of planning every claim again: its limit is in the statement's text, so the
    generic plan's cost is not estimated for a tenth of the table (the claim's query says why)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        _populate(conn, pg_schema, 10_000)
    pool = ConnectionPool(pg_dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True)
    try:
        store = PostgresStore(pool, pg_schema)
        for i in range(20):
            assert len(store.claim("w1", ["wf"], NOW.add(seconds=i), pendulum.duration(seconds=30), 10)) == 10
        claim = Queries(pg_schema).render("claim", {"limit": sql.Literal(10)}).decode()
        with pool.connection() as conn:
            found = conn.execute(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = %s",
                (re.sub(r"%\((\w+)\)s", _numbered(claim), claim),),
            ).fetchall()
    finally:
        pool.close()
    assert len(found) == 1, "the claim statement was not prepared"
    generic, custom = found[0]
    assert generic > 0 and custom <= 5, found


def _numbered(text: str) -> Callable[[re.Match[str]], str]:
    """Placeholders as psycopg sends them: $1, $2, … in order of first use."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", text)))
    return lambda m: f"${names.index(m.group(1)) + 1}"


def test_a_freed_place_wakes_the_best_parked_runs_from_the_front_of_their_indexes(
    pg_dsn: str, pg_schema: str
) -> None:
    """With 20,000 runs parked on a workflow and 20,000 on keys (priorities mixed), unpark reads the best
    of each from an index in wake order: no sequential scan, no sort of the parked runs."""
    runs = sql.Identifier(pg_schema, "runs")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, pg_schema)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, workflow_id, status, created_at, updated_at, priority, parked, "
                "concurrency_key) SELECT 'p-' || g, 'wf', 'pending', %(t)s, %(t)s, g %% 7, "
                "CASE WHEN g %% 2 = 0 THEN 'key' ELSE 'workflow' END, "
                "CASE WHEN g %% 2 = 0 THEN 'k' || (g %% 50) END FROM generate_series(1, 40000) AS g"
            ).format(runs),
            {"t": NOW},
        )
        conn.execute(sql.SQL("ANALYZE {}").format(runs))
        unpark = Queries(pg_schema)["unpark"]
        params = {"workflow_id": "wf", "key": "k7", "now": NOW}
        plan = "\n".join(row[0] for row in conn.execute(b"EXPLAIN " + unpark, params).fetchall())
    sorts = [line for line in plan.splitlines() if "Sort Key" in line]
    assert "Seq Scan on runs" not in plan and not any("priority" in line for line in sorts), plan
    assert "runs_parked_key_idx" in plan and "runs_parked_workflow_idx" in plan, plan
