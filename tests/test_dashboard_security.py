"""The dashboard's protections over HTTP: CSRF, origin checks, read-only mode, escaping, security
headers, offline assets; and how it adapts to its client (retry when available, AsyncClient, mounting)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import pgflow
from dashboard_support import FLOWS, csrf_token
from pgflow.dashboard import create_app
from pgflow.testing import Harness

PACKAGE = Path(pgflow.__file__).parent / "dashboard"


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness(FLOWS) as h:
        yield h


@pytest.fixture
def waiting(harness: Harness) -> str:
    run = harness.start_workflow("greet", {"who": "ada"})
    harness.run_until_idle()
    return run.id


def browser(client: object, **kw: Any) -> TestClient:
    """A test browser on the dashboard, holding its CSRF cookie after a first visit."""
    tc = TestClient(create_app(client, **kw))
    tc.get("/runs")
    return tc


def post(tc: TestClient, url: str, data: dict[str, str], **headers: str) -> Any:
    return tc.post(url, data=data, headers=headers, follow_redirects=False)


# -- CSRF and origin ---------------------------------------------------------------------------------


def test_csrf_cookie_is_strict_and_the_forms_carry_it(harness: Harness, waiting: str) -> None:
    """The first visit sets a SameSite=Strict, HttpOnly token cookie; the forms carry the same token."""
    tc = TestClient(create_app(harness))
    response = tc.get(f"/runs/{waiting}")
    cookie = response.headers["set-cookie"]
    assert "pgflow_csrf=" in cookie and "samesite=strict" in cookie.lower() and "httponly" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert csrf_token(response.text) == tc.cookies["pgflow_csrf"]
    assert "set-cookie" not in tc.get("/runs").headers  # kept, not renewed on every page


@pytest.mark.parametrize(
    "form",
    [{}, {"csrf_token": "x" * 43}, {"csrf_token": ""}],
    ids=["missing", "wrong", "empty"],
)
def test_post_without_the_right_token_is_refused(
    harness: Harness, waiting: str, form: dict[str, str]
) -> None:
    """A POST without the cookie's token is a 403 and changes nothing."""
    tc = browser(harness)
    response = post(tc, f"/runs/{waiting}/pause", form)
    assert response.status_code == 403 and "security token" in response.text
    assert not harness.get_run(waiting).held


def test_post_without_the_cookie_is_refused(harness: Harness, waiting: str) -> None:
    """A token in the form without the cookie (another browser's token) is a 403."""
    token = browser(harness).cookies["pgflow_csrf"]
    fresh = TestClient(create_app(harness))
    assert post(fresh, f"/runs/{waiting}/pause", {"csrf_token": token}).status_code == 403
    assert not harness.get_run(waiting).held


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [
        ("origin", "https://evil.example", 403),
        ("origin", "null", 403),
        ("referer", "https://evil.example/page", 403),
        ("origin", "http://testserver", 303),
        ("referer", "http://testserver/runs", 303),
    ],
)
def test_origin_or_referer_must_be_this_host(
    harness: Harness, waiting: str, header: str, value: str, status: int
) -> None:
    """When the browser names the sending page, it must be this host, even with a valid token."""
    tc = browser(harness)
    form = {"csrf_token": tc.cookies["pgflow_csrf"]}
    response = post(tc, f"/runs/{waiting}/pause", form, **{header: value})
    assert response.status_code == status
    assert harness.get_run(waiting).held == (status == 303)


def test_behind_a_proxy_the_forwarded_host_counts(harness: Harness, waiting: str) -> None:
    """Behind a reverse proxy that rewrites Host, the Origin may name its X-Forwarded-Host."""
    tc = browser(harness)
    form = {"csrf_token": tc.cookies["pgflow_csrf"]}
    headers = {"origin": "https://ops.example.com", "x-forwarded-host": "ops.example.com"}
    assert post(tc, f"/runs/{waiting}/pause", form, **headers).status_code == 303


def test_a_huge_form_is_refused(harness: Harness, waiting: str) -> None:
    """A form over 1 MB is a 413, read no further."""
    tc = browser(harness)
    form = {"csrf_token": tc.cookies["pgflow_csrf"], "event": "approved", "data": "x" * 1_100_000}
    assert post(tc, f"/runs/{waiting}/event", form).status_code == 413


# -- read-only ---------------------------------------------------------------------------------------


def test_read_only_shows_no_actions(harness: Harness, waiting: str) -> None:
    """A read-only dashboard renders no action form and no event form, and says it is read-only."""
    tc = browser(harness, read_only=True)
    html = tc.get(f"/runs/{waiting}").text
    assert 'method="post"' not in html and "Send an event" not in html and "read-only" in html
    assert 'method="post"' not in tc.get(f"/runs/{waiting}/live").text


@pytest.mark.parametrize("action", ["event", "pause", "resume", "cancel", "fast-forward", "retry"])
def test_read_only_refuses_every_action(harness: Harness, waiting: str, action: str) -> None:
    """Read-only: every action is a 403, even with a valid token, and nothing changes."""
    tc = browser(harness, read_only=True)
    form = {"csrf_token": tc.cookies["pgflow_csrf"], "event": "approved", "confirmed": "yes"}
    response = post(tc, f"/runs/{waiting}/{action}", form)
    assert response.status_code == 403 and "read-only" in response.text
    assert post(tc, f"/runs/{waiting}/{action}", form, accept="application/json").status_code == 403
    run = harness.get_run(waiting)
    assert run.status == "paused" and not run.held and harness.get_mailbox(waiting) == []


# -- escaping, headers, assets -------------------------------------------------------------------------


def test_everything_is_escaped(harness: Harness) -> None:
    """Markup in input, resource ids and event names is shown as text, never interpreted."""
    evil = "<script>alert(1)</script>"
    run = harness.start_workflow("greet", {"who": evil}, resource_id="<b>r</b>")
    harness.run_until_idle()
    harness.trigger_event(run.id, "<img src=x onerror=alert(2)>", {"x": evil})
    tc = browser(harness)
    pages = [tc.get("/runs").text, tc.get(f"/runs/{run.id}").text, tc.get(f"/runs/{run.id}/live").text]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>r</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1] and "&lt;b&gt;r&lt;/b&gt;" in pages[0]


def test_security_headers_on_every_response(harness: Harness, waiting: str) -> None:
    """Pages, fragments, JSON, errors and static files carry the CSP (no inline script) and DENY framing."""
    tc = browser(harness)
    form = {"csrf_token": tc.cookies["pgflow_csrf"]}
    responses = [
        tc.get("/runs"), tc.get(f"/runs/{waiting}/live"), tc.get("/runs/missing"), tc.get("/static/dashboard.js"),
        post(tc, f"/runs/{waiting}/pause", form, accept="application/json"),
    ]  # fmt: skip
    for response in responses:
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert responses[0].headers["cache-control"] == "no-store"


def test_no_inline_script_and_no_external_asset() -> None:
    """Templates have no inline script or handler, and nothing loads from another host (works offline)."""
    for path in [*PACKAGE.glob("templates/*.html"), *PACKAGE.glob("static/*")]:
        text = path.read_text("utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
        if path.suffix == ".html":
            assert "<script>" not in text and " onclick=" not in text and " onsubmit=" not in text


# -- adapting to the client ------------------------------------------------------------------------------


class _Without:
    """A client proxy that lacks one method (as a client from before that method existed)."""

    def __init__(self, client: object, missing: str) -> None:
        self._client, self._missing = client, missing

    def __getattr__(self, name: str) -> Any:
        if name == self._missing:
            raise AttributeError(name)
        return getattr(self._client, name)


class _RetryingHarness(Harness):
    """A harness with a ``retry_workflow`` that records its calls."""

    retried: list[str]

    def retry_workflow(self, run_id: str, **kw: Any) -> pgflow.WorkflowRun:
        self.retried = [*getattr(self, "retried", []), run_id]
        return self.get_run(run_id)


def test_retry_button_when_the_client_can_retry() -> None:
    """A failed run offers Retry when the client has retry_workflow, and the button calls it."""
    with _RetryingHarness(FLOWS) as h:
        run = h.start_workflow("explode")
        h.run_until_idle()
        tc = browser(h)
        assert f'/runs/{run.id}/retry"' in tc.get(f"/runs/{run.id}").text
        response = post(tc, f"/runs/{run.id}/retry", {"csrf_token": tc.cookies["pgflow_csrf"]})
        assert response.status_code == 303 and h.retried == [run.id]


def test_no_retry_without_retry_workflow(harness: Harness) -> None:
    """Without retry_workflow no Retry button is shown, and a retry POST says why (501)."""
    run = harness.start_workflow("explode")
    harness.run_until_idle()
    tc = browser(_Without(harness, "retry_workflow"))
    assert f'/runs/{run.id}/retry"' not in tc.get(f"/runs/{run.id}").text
    response = post(tc, f"/runs/{run.id}/retry", {"csrf_token": tc.cookies["pgflow_csrf"]})
    assert response.status_code == 501 and "retry_workflow" in response.text


@pytest.mark.postgres
def test_async_client_serves_pages_and_actions(pg_dsn: str, pg_schema: str) -> None:
    """With an AsyncClient the pages render and the actions act (its coroutines are awaited)."""
    with Harness(FLOWS, dsn=pg_dsn, schema=pg_schema) as h:
        run = h.start_workflow("greet")
        h.run_until_idle()
        client = pgflow.AsyncClient(pg_dsn, schema=pg_schema, clock=h.clock)
        with TestClient(create_app(client)) as tc:
            assert run.id in tc.get("/runs").text and "approval" in tc.get(f"/runs/{run.id}").text
            assert "greet" in tc.get("/workflows").text
            form = {"csrf_token": tc.cookies["pgflow_csrf"], "event": "approved", "data": "[1, 2]"}
            assert post(tc, f"/runs/{run.id}/event", form).status_code == 303
            h.run_until_idle()
            assert h.get_run(run.id).output == {"total": 3, "answer": [1, 2]}
            tc.portal.call(client.close)


def test_mounted_under_a_prefix(harness: Harness, waiting: str) -> None:
    """Mounted at /ops/pgflow in another app, links, assets, forms and the cookie stay under it."""
    outer = Starlette(routes=[Mount("/ops/pgflow", app=create_app(harness))])
    tc = TestClient(outer)
    response = tc.get(f"/ops/pgflow/runs/{waiting}")
    html = response.text
    assert response.status_code == 200 and "path=/ops/pgflow" in response.headers["set-cookie"].lower()
    assert 'href="/ops/pgflow/static/dashboard.css' in html and 'href="/ops/pgflow/runs"' in html
    assert f'action="/ops/pgflow/runs/{waiting}/pause"' in html
    assert f'data-live="/ops/pgflow/runs/{waiting}/live"' in html
    form = {"csrf_token": tc.cookies["pgflow_csrf"]}
    response = tc.post(f"/ops/pgflow/runs/{waiting}/pause", data=form, follow_redirects=False)
    assert response.headers["location"] == f"/ops/pgflow/runs/{waiting}?done=pause"
    assert tc.get("/ops/pgflow/static/dashboard.js").status_code == 200


def test_importing_pgflow_does_not_import_the_dashboard() -> None:
    """``import pgflow`` loads neither the dashboard nor Starlette nor Jinja2."""
    code = "import sys, pgflow; print(sorted(m for m in ('starlette', 'jinja2', 'pgflow.dashboard') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
