"""Every script in examples/ runs to completion by itself, on a real PostgreSQL, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = [pytest.mark.postgres, pytest.mark.process]

# (script, lines that must appear in its output)
CASES = [
    ("basic.py", ["run completed: {'order_id': 'A-1001', 'status': 'shipped'", "progress: 4/4 steps, 100.0%"]),
    (
        "approval_flow.py",
        ["{'approved': True, 'by': 'ada', 'payment': 'PAY-grace-120'}",
         "{'approved': False, 'by': 'policy'}, 2 reminder(s)"],
    ),
    (
        "polling_payment.py",
        ["order-1: completed, {'order_id': 'order-1', 'paid': True, 'checks': 3",
         "order-2: completed, {'order_id': 'order-2', 'paid': False} (poll timed out: True"],
    ),
    (
        "timeouts_and_retries.py",
        ["step 'exchange-rate': 3 attempts", "'error': 'StepTimeoutError'",
         "'first': 'sync started on attempt 0'}, run retries 2", "error: WorkflowTimeoutError"],
    ),
    (
        "ai_agent.py",
        ["agent run completed: sent after 2 drafts", "LLM steps retried after rate limits: {'plan': 2"],
    ),
    (
        "microservices/run.py",
        ["same order: True", "[api] GET by another customer -> 404",
         "[api] order finished: {'status': 'completed', 'result': {'status': 'shipped'",
         "[api] refund finished: {'status': 'completed', 'result': {'status': 'refunded'", "demo finished"],
    ),
]  # fmt: skip


def example_env(pg_dsn: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGFLOW_DATABASE_URL")}
    env.update(PGFLOW_DATABASE_URL=pg_dsn, PGFLOW_SCHEMA=schema, PYTHONUNBUFFERED="1")
    return env


@pytest.mark.parametrize(("script", "expected"), CASES, ids=[c[0] for c in CASES])
def test_example_runs(script: str, expected: list[str], pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """The example exits 0 within a minute and prints what it is about."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=example_env(pg_dsn, pg_schema),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for line in expected:
        assert line in proc.stdout, output
    assert time.monotonic() - started < 60, output


def test_microservices_as_two_processes(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """worker.py and api.py work as separate processes; the worker stops gracefully on SIGTERM."""
    env = example_env(pg_dsn, pg_schema)
    worker = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "microservices" / "worker.py")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        api = subprocess.run(
            [sys.executable, str(EXAMPLES / "microservices" / "api.py")],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert api.returncode == 0, api.stdout + api.stderr
        assert "[api] refund finished: {'status': 'completed'" in api.stdout, api.stdout + api.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker_output, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker_output, _ = worker.communicate()
    assert worker.returncode == 0, worker_output
    assert "[worker] stopped" in worker_output, worker_output
    assert "[worker] charging cust-7 25.00 EUR" in worker_output, worker_output
