"""``pgflow dashboard``: serves on 127.0.0.1 with uvicorn, read-only on request, clear errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from dashboard_support import FLOWS
from pgflow.testing import Harness

pytestmark = [pytest.mark.postgres, pytest.mark.process]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pgflow_cli(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGFLOW_DATABASE_URL", "DATABASE_URL")}
    return subprocess.Popen(
        [sys.executable, "-m", "pgflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_until_serving(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited: {proc.communicate()}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the dashboard did not start serving")


@pytest.fixture
def waiting_run(pg_dsn: str, pg_schema: str) -> Iterator[str]:
    with Harness(FLOWS, dsn=pg_dsn, schema=pg_schema) as h:
        run = h.start_workflow("greet")
        h.run_until_idle()
        yield run.id


def serve(pg_dsn: str, pg_schema: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = pgflow_cli("dashboard", "--dsn", pg_dsn, "--schema", pg_schema, "--port", str(port), *extra)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def test_serves_the_dashboard_on_localhost_until_interrupted(
    pg_dsn: str, pg_schema: str, waiting_run: str
) -> None:
    """`pgflow dashboard` serves the pages on 127.0.0.1:PORT and exits 0 on Ctrl-C."""
    proc, base = serve(pg_dsn, pg_schema)
    try:
        response = wait_until_serving(f"{base}/runs", proc)
        assert response.status_code == 200 and waiting_run in response.text
        assert "approval" in httpx.get(f"{base}/runs/{waiting_run}").text
    finally:
        code, err = stop(proc)
    assert code == 0 and "pgflow dashboard (actions enabled) on http://127.0.0.1:" in err


def test_read_only_serves_pages_and_refuses_actions(pg_dsn: str, pg_schema: str, waiting_run: str) -> None:
    """`--read-only` shows no action and answers POSTs with 403."""
    proc, base = serve(pg_dsn, pg_schema, "--read-only")
    try:
        with httpx.Client(base_url=base) as web:
            page = wait_until_serving(f"{base}/runs/{waiting_run}", proc)
            assert page.status_code == 200 and 'method="post"' not in page.text
            web.get("/runs")
            form = {"csrf_token": web.cookies["pgflow_csrf"]}
            assert web.post(f"/runs/{waiting_run}/cancel", data=form).status_code == 403
    finally:
        code, err = stop(proc)
    assert code == 0 and "read-only" in err


def test_read_only_on_a_schema_without_tables_exits_1(pg_dsn: str, pg_schema: str, waiting_run: str) -> None:
    """`--read-only` on a schema without pgflow tables exits 1, creates nothing, names the nearest schema."""
    proc = pgflow_cli("dashboard", "--dsn", pg_dsn, "--schema", pg_schema + "x", "--read-only")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "has no pgflow tables" in err and f"--schema {pg_schema}" in err
    assert "Traceback" not in err


def test_missing_extra_says_how_to_install_it(pg_dsn: str) -> None:
    """Without the dashboard extra, the command says which package to install (exit 1)."""
    code = (
        "import sys; sys.modules['uvicorn'] = None; from pgflow.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "dashboard", "--dsn", pg_dsn], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "pip install 'pgflow-engine[dashboard]'" in done.stderr
