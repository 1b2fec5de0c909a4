"""A worker process for the crash tests: ``python -m procs.worker DSN SCHEMA`` (cwd: tests/).

Serves ``logged``: four Run steps, each appending ``(run_id, step_id)`` to ``SCHEMA.side_effects``
(its own autocommit write: the side effect) and then sleeping a little, so a SIGKILL can land after a
step's side effect and before its record. Prints ``ready`` once the engine is started; stops
gracefully on SIGTERM.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import Run, workflow

DSN, SCHEMA = sys.argv[1], sys.argv[2]
_pool = ConnectionPool(DSN, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False)
_INSERT = sql.SQL("INSERT INTO {} (run_id, step_id) VALUES (%s, %s)").format(
    sql.Identifier(SCHEMA, "side_effects")
)


def side_effect(run_id: str, step_id: str, pause: float) -> str:
    with _pool.connection() as conn:
        conn.execute(_INSERT, (run_id, step_id))
    time.sleep(pause)
    return step_id


@workflow("logged")
def logged(ctx: pgflow.Context[Any]):
    pause = ctx.input["pause"]
    yield Run("s1", side_effect, ctx.run_id, "s1", pause)
    yield Run("s2", side_effect, ctx.run_id, "s2", pause)
    yield Run("s3", side_effect, ctx.run_id, "s3", pause)
    yield Run("s4", side_effect, ctx.run_id, "s4", pause)
    return "done"


def main() -> None:
    _pool.open()
    engine = pgflow.Engine(DSN, schema=SCHEMA, workflows=[logged], lease="2s", concurrency=8)
    engine.start()
    print("ready", flush=True)
    engine.run_worker()  # until SIGTERM (or SIGKILL)
    _pool.close()


if __name__ == "__main__":
    main()
