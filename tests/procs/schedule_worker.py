"""A worker process for the schedule test: ``python -m procs.schedule_worker DSN SCHEMA NAME`` (cwd:
tests/).

Its engine declares the schedule ``every-second`` (``* * * * * *``) of the workflow ``ticking`` with
``Engine(schedules=[...])``, so every process upserts it when it starts and every process's worker
fires it. ``ticking`` has one Run step, ``record``, which inserts a row into ``SCHEMA.executions``
(created by the test: run id, this process's NAME, the database's clock) on every execution — no
``ON CONFLICT``: a step executed twice leaves two rows. The engine's connections carry
``application_name`` ``pgflow-NAME``, so the test's trigger on ``runs`` can tell which process
inserted (fired) a tick's run. Prints ``ready <path of the pgflow package>`` once the engine is
started; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import sys
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgflow
from pgflow import Run, Schedule, workflow

DSN, SCHEMA, NAME = sys.argv[1], sys.argv[2], sys.argv[3]
SCHEDULE_ID = "every-second"
_RECORD = sql.SQL("INSERT INTO {} (run_id, worker, at) VALUES (%s, %s, clock_timestamp())").format(
    sql.Identifier(SCHEMA, "executions")
)


def record(run_id: str) -> str:
    """One row per execution of this step; the name of the process that executed it."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(_RECORD, (run_id, NAME))
    return NAME


@workflow("ticking")
def ticking(ctx: pgflow.Context[Any]) -> pgflow.Flow[str]:
    return (yield from Run("record", record, ctx.run_id))


def main() -> None:
    engine = pgflow.Engine(
        make_conninfo(DSN, application_name=f"pgflow-{NAME}"), schema=SCHEMA, workflows=[ticking],
        schedules=[Schedule(SCHEDULE_ID, ticking, "* * * * * *")], concurrency=4,
    )  # fmt: skip
    engine.start()
    print("ready", pgflow.__file__, flush=True)
    engine.run_worker()  # until SIGTERM


if __name__ == "__main__":
    main()
