"""A worker process for the flow-control test: ``python -m procs.flow_worker DSN SCHEMA CONCURRENCY
PAUSE`` (cwd: tests/).

Serves two limited workflows, each ``enter`` (a Run step), ``work`` (a Run step sleeping ``PAUSE``
seconds), ``nap`` (a Delay of ``PAUSE`` seconds: the run waits, keeping its place) and ``leave`` (a
Run step):

- ``keyed`` (``key_concurrency=1``): its scope is ``key:<input key>`` (``key:-`` without a key);
- ``capped`` (``concurrency=3``): its scope is ``capped``.

``enter`` and ``leave`` are the user's view of "in progress", in ``SCHEMA.visits`` (one row per run:
scope, entered_at, left_at; timestamps from the database's clock, so one clock for every process)
and ``SCHEMA.gauge`` (one row per scope, created by the test, with ``peak``: the most runs ever inside
the scope at once). Each is one transaction that first locks its scope's gauge row, so the count it
takes of the runs inside (entered, not left) is exact; ``enter`` is idempotent (a re-executed step
enters once). Prints ``ready <path of the pgflow package>`` once the engine is started; stops
gracefully on SIGTERM.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import Delay, Run, workflow

DSN, SCHEMA, CONCURRENCY, PAUSE = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
_pool = ConnectionPool(DSN, min_size=1, max_size=CONCURRENCY, kwargs={"autocommit": True}, open=False)
_GAUGE, _VISITS = sql.Identifier(SCHEMA, "gauge"), sql.Identifier(SCHEMA, "visits")
_LOCK = sql.SQL("SELECT peak FROM {} WHERE scope = %s FOR UPDATE").format(_GAUGE)
_ENTER = sql.SQL(
    "INSERT INTO {} (run_id, scope, entered_at) VALUES (%s, %s, clock_timestamp()) ON CONFLICT (run_id) DO NOTHING"
).format(_VISITS)
_INSIDE = sql.SQL("SELECT count(*) FROM {} WHERE scope = %s AND left_at IS NULL").format(_VISITS)
_PEAK = sql.SQL("UPDATE {} SET peak = greatest(peak, %s) WHERE scope = %s").format(_GAUGE)
_LEAVE = sql.SQL("UPDATE {} SET left_at = clock_timestamp() WHERE run_id = %s").format(_VISITS)


def enter(scope: str, run_id: str) -> int:
    """The run enters its scope; how many runs are inside it now, this one included."""
    with _pool.connection() as conn, conn.transaction():
        if conn.execute(_LOCK, (scope,)).fetchone() is None:
            raise LookupError(f"no gauge row for scope {scope!r}")
        conn.execute(_ENTER, (run_id, scope))
        row = conn.execute(_INSIDE, (scope,)).fetchone()
        assert row is not None
        conn.execute(_PEAK, (row[0], scope))
        return int(row[0])


def leave(scope: str, run_id: str) -> None:
    with _pool.connection() as conn, conn.transaction():
        conn.execute(_LOCK, (scope,))
        conn.execute(_LEAVE, (run_id,))


def _steps(scope: str, run_id: str) -> pgflow.Flow[int]:
    inside = yield from Run("enter", enter, scope, run_id)
    yield from Run("work", time.sleep, PAUSE)
    yield from Delay("nap", f"{PAUSE * 1000:g}ms")
    yield from Run("leave", leave, scope, run_id)
    return inside


@workflow("keyed", key_concurrency=1)
def keyed(ctx: pgflow.Context[Any]) -> pgflow.Flow[int]:
    return (yield from _steps(f"key:{ctx.input['key'] or '-'}", ctx.run_id))


@workflow("capped", concurrency=3)
def capped(ctx: pgflow.Context[Any]) -> pgflow.Flow[int]:
    return (yield from _steps("capped", ctx.run_id))


def main() -> None:
    _pool.open()
    engine = pgflow.Engine(
        DSN, schema=SCHEMA, workflows=[keyed, capped], lease="10s", concurrency=CONCURRENCY
    )
    engine.start()
    print("ready", pgflow.__file__, flush=True)
    engine.run_worker()  # until SIGTERM
    _pool.close()


if __name__ == "__main__":
    main()
