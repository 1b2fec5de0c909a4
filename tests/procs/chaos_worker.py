"""A worker process for the chaos test: ``python -m procs.chaos_worker DSN SCHEMA LOG_DIR LEASE
CONCURRENCY PAUSE`` (cwd: tests/).

Serves ``chaos``: five Run steps ``s1``…``s5``. Each execution of a step first appends one line
``run_id step_id pid time.time()`` to ``LOG_DIR/exec-<pid>.log`` (one ``write`` on an ``O_APPEND``
descriptor: the line is in the file even when the process is SIGKILLed right after), then sleeps
``PAUSE`` seconds. That file is the ground truth of which step executions started, and when,
independent of the database. Prints ``ready`` once the engine is started; stops gracefully on
SIGTERM. Log records (WARNING and up, with unix timestamps) go to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import pgflow
from pgflow import Run, workflow

STEPS = ("s1", "s2", "s3", "s4", "s5")
DSN, SCHEMA, LOG_DIR = sys.argv[1], sys.argv[2], sys.argv[3]
LEASE, CONCURRENCY, PAUSE = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
_log_fd = os.open(os.path.join(LOG_DIR, f"exec-{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def step(run_id: str, step_id: str) -> str:
    os.write(_log_fd, f"{run_id} {step_id} {os.getpid()} {time.time():.6f}\n".encode())
    time.sleep(PAUSE)
    return step_id


@workflow("chaos")
def chaos(ctx: pgflow.Context[Any]):
    for step_id in STEPS:
        yield Run(step_id, step, ctx.run_id, step_id)
    return "done"


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(created).3f %(levelname)s %(name)s: %(message)s"
    )
    engine = pgflow.Engine(DSN, schema=SCHEMA, workflows=[chaos], lease=f"{LEASE}s", concurrency=CONCURRENCY)
    engine.start()
    print("ready", flush=True)
    engine.run_worker()  # until SIGTERM (or SIGKILL)


if __name__ == "__main__":
    main()
