"""``python -m procs.starter DSN SCHEMA AT INDEX`` (cwd: tests/): wait until unix time ``AT``, then build
an Engine on ``SCHEMA`` and start it (migrations + workers) at the same moment as its siblings; start a
run, wait for it, print its output as the last line and exit 0."""

from __future__ import annotations

import sys
import time
from typing import Any

import pgflow
from pgflow import Run, workflow


def square(x: int) -> int:
    return x * x


@workflow("square")
def square_wf(ctx: pgflow.Context[Any]):
    value = yield Run("square", square, ctx.input)
    return value


def main() -> None:
    dsn, schema, at, index = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    engine = pgflow.Engine(dsn, schema=schema, workflows=[square_wf], lease="2s", concurrency=2)
    time.sleep(max(0.0, at - time.time()))
    engine.start()
    try:
        run = engine.start_workflow("square", index)
        done = engine.wait_for_run(run.id, timeout="20s")
        print(done.output, flush=True)
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
