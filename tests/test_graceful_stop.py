"""Graceful stop (SPEC §13), with a real ``pgflow worker`` process: the first SIGTERM says what it
waits for and for how long, a second one stops at once, the process exits within 1 s of the stop
even with a step still running, and nothing is logged as an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pgflow

pytestmark = [pytest.mark.postgres, pytest.mark.process]

MODULE = """
import time
from pgflow import Run, workflow

def slow(seconds):
    time.sleep(seconds)
    return seconds

@workflow("slow-step")
def slow_step(ctx):
    yield Run("nap", slow, ctx.input)
    return "done"
"""


def _worker(tmp_path: Path, pg_dsn: str, pg_schema: str, *flags: str) -> subprocess.Popen[str]:
    (tmp_path / "slowmod.py").write_text(textwrap.dedent(MODULE))
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "pgflow", "worker", "slowmod", "--dsn", pg_dsn, "--schema", pg_schema, *flags],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _running_step(client: pgflow.Client, proc: subprocess.Popen[str], seconds: float) -> pgflow.WorkflowRun:
    """Start a run whose step sleeps ``seconds`` and wait until that step is running."""
    deadline = time.monotonic() + 20
    while True:
        try:
            run = client.start_workflow("slow-step", seconds)
            break
        except pgflow.UnknownWorkflowError:  # the worker has not registered it yet
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.1)
    while client.get_run(run.id).current_step_id != "nap":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return run


def test_a_second_signal_stops_at_once_with_a_step_still_running(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    """First SIGTERM: the worker says it waits for 1 run, up to the shutdown timeout; second SIGTERM:
    the process exits within 1 s although the step still sleeps; no traceback, no ERROR line; the
    run is left to its lease (still running, step running)."""
    proc = _worker(tmp_path, pg_dsn, pg_schema, "--shutdown-timeout", "60s")
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        run = _running_step(client, proc, 30)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert proc.poll() is None, "the first signal waits for the running step"
        second = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
        exited_after = time.monotonic() - second
        left = client.get_run(run.id)
    assert proc.returncode == 0, err
    assert exited_after < 1.0, f"exited {exited_after:.2f}s after the second signal"
    assert "waiting up to 60s for 1 run(s) executing a step" in err and run.id in err
    assert "send it again to stop at once" in err
    assert "Traceback" not in err and " ERROR " not in err, err
    assert left.status == "running" and left.timeline["nap"].status == "running"


def test_the_shutdown_timeout_bounds_the_stop(tmp_path: Path, pg_dsn: str, pg_schema: str) -> None:
    """With --shutdown-timeout 1s, one SIGTERM stops the process about 1 s later (plus at most 1 s),
    though the step would sleep for 30 s; the late commit is not logged as an error."""
    proc = _worker(tmp_path, pg_dsn, pg_schema, "--shutdown-timeout", "1s")
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        _running_step(client, proc, 30)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    took = time.monotonic() - sent
    assert proc.returncode == 0, err
    assert 0.9 <= took < 2.0, f"stopped {took:.2f}s after SIGTERM"
    assert "waiting up to 1s" in err and "left to their lease" in err
    assert "Traceback" not in err and " ERROR " not in err and "PoolClosed" not in err, err


def test_a_step_that_finishes_within_the_timeout_is_recorded(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    """A step finishing within the shutdown timeout is recorded and its run released (pending, no
    lease) for the next worker; then the process exits."""
    proc = _worker(tmp_path, pg_dsn, pg_schema, "--shutdown-timeout", "20s")
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        run = _running_step(client, proc, 1.5)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        done = client.get_run(run.id)
    assert proc.returncode == 0, err
    assert done.timeline["nap"].status == "completed"
    assert done.status in ("completed", "pending"), done.status
