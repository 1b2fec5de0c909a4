"""The dashboard over HTTP (Starlette's TestClient): every page and action, against a real
PostgreSQL-backed ``pgflow.Client`` (a ``Harness`` on the same schema drives the runs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import pgflow
from dashboard_support import FLOWS, csrf_token
from pgflow.dashboard import create_app
from pgflow.testing import Harness

pytestmark = pytest.mark.postgres


@pytest.fixture
def harness(pg_dsn: str, pg_schema: str) -> Iterator[Harness]:
    with Harness(FLOWS, dsn=pg_dsn, schema=pg_schema) as h:
        yield h


@pytest.fixture
def client(pg_dsn: str, pg_schema: str, harness: Harness) -> Iterator[pgflow.Client]:
    with pgflow.Client(pg_dsn, schema=pg_schema, clock=harness.clock) as c:  # one time for both
        yield c


@pytest.fixture
def web(client: pgflow.Client) -> Iterator[TestClient]:
    with TestClient(create_app(client)) as tc:
        yield tc


def token(web: TestClient) -> str:
    """The browser's CSRF token: a first visit sets the cookie; the forms carry the same value."""
    web.get("/runs")
    return str(web.cookies["pgflow_csrf"])


def act(web: TestClient, run_id: str, action: str, **fields: str) -> httpx.Response:
    """POST an action as the run page's form does (with the CSRF token)."""
    return web.post(
        f"/runs/{run_id}/{action}", data={"csrf_token": token(web), **fields}, follow_redirects=False
    )


def waiting_greet(h: Harness, **kw: Any) -> pgflow.WorkflowRun:
    run = h.start_workflow("greet", {"who": "ada"}, **kw)
    h.run_until_idle()
    return run


# -- pages -----------------------------------------------------------------------------------------


def test_home_redirects_to_the_runs_page(web: TestClient) -> None:
    """/ redirects to /runs."""
    response = web.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/runs"


def test_runs_page_lists_runs_newest_first_with_counts(web: TestClient, harness: Harness) -> None:
    """The runs page lists runs newest first, with a count per status."""
    first = waiting_greet(harness)
    harness.clock.advance("1s")
    second = harness.start_workflow("explode")
    harness.run_until_idle()
    html = web.get("/runs").text
    assert html.index(second.id) < html.index(first.id)
    assert "paused <b>1</b>" in html and "failed <b>1</b>" in html and "all <b>2</b>" in html


def test_runs_page_filters_by_status_workflow_and_resource(web: TestClient, harness: Harness) -> None:
    """status, workflow and resource filters combine; counts follow the workflow/resource filters."""
    a = waiting_greet(harness, resource_id="u1")
    b = waiting_greet(harness, resource_id="u2")
    c = harness.start_workflow("explode", resource_id="u1")
    harness.run_until_idle()
    failed = web.get("/runs", params={"status": "failed"}).text
    assert c.id in failed and a.id not in failed
    mine = web.get("/runs", params={"resource": "u1"}).text
    assert a.id in mine and c.id in mine and b.id not in mine and "all <b>2</b>" in mine
    greets = web.get("/runs", params={"workflow": "greet", "resource": "u2"}).text
    assert b.id in greets and a.id not in greets and c.id not in greets
    assert "No runs match these filters." in web.get("/runs", params={"workflow": "nap"}).text


def test_runs_page_pages_with_cursors(web: TestClient, harness: Harness) -> None:
    """60 runs: page 1 shows 50 and links to older runs; that page links back to the newer ones."""
    ids = []
    for _ in range(60):
        ids.append(harness.start_workflow("nap").id)
        harness.clock.advance("1s")
    first = web.get("/runs").text
    assert first.count('class="run-row"') == 50 and ids[-1] in first and ids[9] not in first
    assert 'rel="prev"' not in first
    older_href = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    older = web.get(older_href).text
    assert older.count('class="run-row"') == 10 and ids[0] in older and ids[10] not in older
    newer_href = older.split('rel="prev" href="')[1].split('"')[0].replace("&amp;", "&")
    assert web.get(newer_href).text.count('class="run-row"') == 50


def test_runs_page_bad_query_is_a_400_with_a_message(web: TestClient) -> None:
    """An unknown status or an unknown cursor is a 400 page that says why, not a 500."""
    response = web.get("/runs", params={"status": "sleeping"})
    assert response.status_code == 400 and "unknown status" in response.text
    response = web.get("/runs", params={"after": "no-such-run"})
    assert response.status_code == 400 and "unknown cursor" in response.text


def test_run_page_shows_timeline_waiting_and_mailbox(web: TestClient, harness: Harness) -> None:
    """A waiting run shows its status, steps with durations and bars, its wait and its mailbox."""
    run = waiting_greet(harness)
    harness.trigger_event(run.id, "unrelated", {"note": "kept"})
    html = web.get(f"/runs/{run.id}").text
    assert 'data-step-id="add"' in html and 'data-step-id="approval"' in html
    assert 'data-step-status="waiting"' in html and '<svg class="bar"' in html
    assert "Waiting at step <code>approval</code> for event <code>approved</code>" in html
    assert '<code class="event-name">unrelated</code>' in html and "&#34;note&#34;: &#34;kept&#34;" in html
    assert "1 of 3 steps" in html and "{\n  &#34;who&#34;: &#34;ada&#34;\n}" in html


def test_run_page_shows_concurrency_key_and_priority_only_when_set(web: TestClient, harness: Harness) -> None:
    """A run's concurrency key and a non-zero priority are among its facts; a plain run shows neither."""
    keyed = waiting_greet(harness, concurrency_key="tenant <7>", priority=-3)
    html = web.get(f"/runs/{keyed.id}").text
    assert '<dd class="mono" id="concurrency-key">tenant &lt;7&gt;</dd>' in html
    assert '<dd id="priority">-3</dd>' in html
    plain = web.get(f"/runs/{waiting_greet(harness).id}").text
    assert 'id="concurrency-key"' not in plain and 'id="priority"' not in plain


def test_failed_run_shows_its_error_and_traceback(web: TestClient, harness: Harness) -> None:
    """A failed run shows the error type, message, step and traceback."""
    run = harness.start_workflow("explode")
    harness.run_until_idle()
    html = web.get(f"/runs/{run.id}").text
    assert "<b>ValueError</b>: exploded: on purpose" in html and "<code>blow-up</code>" in html
    assert 'id="traceback"' in html and "Traceback (most recent call last)" in html


def test_unknown_run_is_404(web: TestClient) -> None:
    """An unknown run is a 404 page naming it, for the page and its live fragment."""
    for url in ("/runs/no-such-run", "/runs/no-such-run/live"):
        response = web.get(url)
        assert response.status_code == 404 and "no-such-run" in response.text
        assert "Traceback" not in response.text


def test_unknown_page_is_404_and_get_on_an_action_is_405(web: TestClient) -> None:
    """Unknown paths are 404 pages; actions take only POST (405)."""
    assert web.get("/nothing-here").status_code == 404
    assert web.get("/runs/x/cancel").status_code == 405


def test_run_page_links_parent_and_children(web: TestClient, harness: Harness) -> None:
    """A parent run lists its child runs; the child links back to its parent."""
    run = harness.start_workflow("parent")
    harness.run_until_idle()
    (child,) = harness.get_child_runs(run.id)
    parent_html = web.get(f"/runs/{run.id}").text
    assert f'href="/runs/{child.id}"' in parent_html and "step <code>spawn</code>" in parent_html
    child_html = web.get(f"/runs/{child.id}").text
    assert f'href="/runs/{run.id}"' in child_html and "Parent run" in child_html


def test_live_fragment_holds_the_changing_parts(web: TestClient, harness: Harness) -> None:
    """The live fragment has every live part, reflects a change, and is not a whole page."""
    run = waiting_greet(harness)
    before = web.get(f"/runs/{run.id}/live").text
    for part in ("top", "timeline", "mailbox", "more"):
        assert f'data-live-part="{part}"' in before
    assert "<html" not in before and 'data-status="paused"' in before
    harness.trigger_event(run.id, "approved", {"ok": True})
    harness.run_until_idle()
    after = web.get(f"/runs/{run.id}/live").text
    assert 'data-status="completed"' in after and 'data-step-status="waiting"' not in after


def test_workflows_page_lists_steps_and_counts(web: TestClient, harness: Harness) -> None:
    """Every registered workflow is listed with its static steps and its runs by status."""
    waiting_greet(harness)
    html = web.get("/workflows").text
    for wf in FLOWS:
        assert f'data-workflow-id="{wf.id}"' in html
    greet_card = html.split('data-workflow-id="greet"')[1].split("</section>")[0]
    assert "<code>approval</code>" in greet_card and "paused <b>1</b>" in greet_card


def test_static_assets_are_served_from_the_package(web: TestClient) -> None:
    """The CSS, the script and the icon come from the package, cacheable."""
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "javascript"), ("favicon.svg", "svg")):
        response = web.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "max-age" in response.headers["cache-control"]


# -- actions ---------------------------------------------------------------------------------------


def test_trigger_event_from_the_form(web: TestClient, harness: Harness, client: pgflow.Client) -> None:
    """The event form delivers name + JSON data, then redirects (303) to the run with a message."""
    run = waiting_greet(harness)
    response = act(web, run.id, "event", event="approved", data='{"ok": true}')
    assert response.status_code == 303 and response.headers["location"] == f"/runs/{run.id}?done=event"
    assert "Event delivered" in web.get(response.headers["location"]).text
    harness.run_until_idle()
    assert client.get_run(run.id).output == {"total": 3, "answer": {"ok": True}}


def test_event_with_bad_json_is_a_400_message_keeping_the_form(web: TestClient, harness: Harness) -> None:
    """Event data that is not JSON: 400, the reason on the page, what was typed kept; nothing sent."""
    run = waiting_greet(harness)
    response = act(web, run.id, "event", event="approved", data="{oops")
    assert response.status_code == 400
    assert "The event data is not valid JSON" in response.text and "{oops</textarea>" in response.text
    assert harness.get_mailbox(run.id) == []
    assert act(web, run.id, "event", event=" ", data="").status_code == 400


def test_pause_resume_and_fast_forward(web: TestClient, harness: Harness, client: pgflow.Client) -> None:
    """Pause holds the run, resume releases it, fast-forward skips its wait."""
    run = waiting_greet(harness)
    assert act(web, run.id, "pause").status_code == 303 and client.get_run(run.id).held
    assert act(web, run.id, "resume").status_code == 303 and not client.get_run(run.id).held
    assert act(web, run.id, "fast-forward").status_code == 303
    harness.run_until_idle()
    assert client.get_run(run.id).status == "completed"


def test_cancel_asks_for_confirmation_first(web: TestClient, harness: Harness, client: pgflow.Client) -> None:
    """Cancel without confirmation shows a confirmation page; confirmed, it cancels."""
    run = harness.start_workflow("nap")
    harness.run_until_idle()
    page = act(web, run.id, "cancel")
    assert page.status_code == 200 and "Cancel this run?" in page.text and 'value="yes"' in page.text
    assert client.get_run(run.id).status == "paused"
    assert act(web, run.id, "cancel", confirmed="yes").status_code == 303
    assert client.get_run(run.id).status == "cancelled"


def test_resume_on_a_run_at_a_pause_step(web: TestClient, harness: Harness, client: pgflow.Client) -> None:
    """A run at a Pause step offers resume, which completes the step."""
    run = harness.start_workflow("hold")
    harness.run_until_idle()
    assert "Resume" in web.get(f"/runs/{run.id}").text
    assert act(web, run.id, "resume").status_code == 303
    harness.run_until_idle()
    assert client.get_run(run.id).output == "released"


def test_action_refused_by_the_run_state_is_a_409_message(web: TestClient, harness: Harness) -> None:
    """An action the run's state refuses (pausing a failed run) says why with a 409."""
    run = harness.start_workflow("explode")
    harness.run_until_idle()
    response = act(web, run.id, "pause")
    assert response.status_code == 409 and 'class="flash error"' in response.text
    assert "Traceback" in response.text  # the run page itself, with the run's own traceback


def test_action_on_an_unknown_run_is_404(web: TestClient, harness: Harness) -> None:
    """An action on an unknown run is a 404 page, not a 500."""
    response = act(web, "ghost", "pause")
    assert response.status_code == 404 and "ghost" in response.text
    response = act(web, "ghost", "explode")
    assert response.status_code == 404 and "no action" in response.text


def test_actions_answer_json_to_the_script(web: TestClient, harness: Harness) -> None:
    """With Accept: application/json an action answers {ok, message} or {ok: false, error} + status."""
    run = waiting_greet(harness)
    form, headers = (
        {"csrf_token": csrf_token(web.get(f"/runs/{run.id}").text)},
        {"accept": "application/json"},
    )
    ok = web.post(f"/runs/{run.id}/pause", data=form, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"ok": True, "message": ok.json()["message"]}
    again = web.post(f"/runs/{run.id}/pause", data=form, headers=headers)
    assert again.status_code == 409 and again.json()["ok"] is False and "held" in again.json()["error"]


def test_only_the_actions_that_fit_are_offered(web: TestClient, harness: Harness) -> None:
    """A waiting run offers event, pause, fast-forward, cancel; a failed run none of these."""
    run = waiting_greet(harness)
    html = web.get(f"/runs/{run.id}").text
    for action in ("event", "pause", "fast-forward", "cancel"):
        assert f'/runs/{run.id}/{action}"' in html
    assert f'/runs/{run.id}/resume"' not in html
    failed = harness.start_workflow("explode")
    harness.run_until_idle()
    failed_html = web.get(f"/runs/{failed.id}").text
    for action in ("event", "pause", "resume", "fast-forward", "cancel"):
        assert f'/runs/{failed.id}/{action}"' not in failed_html
