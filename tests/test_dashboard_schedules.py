"""The dashboard's schedules page over HTTP (SPEC §15, §16): the list, pause, resume, delete (confirmed),
CSRF and origin refusals, unknown schedules, and the read-only mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pendulum
import pytest
from starlette.testclient import TestClient

import pgflow
from dashboard_support import csrf_token
from pgflow import workflow
from pgflow.dashboard import create_app
from pgflow.testing import Harness, SimClock

T0 = pendulum.datetime(2026, 1, 5, tz="UTC")  # a Monday


@workflow("digest")
def digest(ctx: pgflow.Context[Any]) -> Any:
    return None
    yield


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """Schedules in memory, or on PostgreSQL (the same pages over another store)."""
    options: dict[str, Any] = {"clock": SimClock(T0)}
    if request.param == "postgres":
        options |= {"dsn": request.getfixturevalue("pg_dsn"), "schema": request.getfixturevalue("pg_schema")}
    with Harness([digest], **options) as h:
        h.create_schedule("weekday-digest", digest, "0 9 * * 1-5", timezone="Europe/Paris")
        h.create_schedule("every-hour", digest, "0 * * * *", catch_up="all")
        yield h


@pytest.fixture
def web(harness: Harness) -> Iterator[TestClient]:
    with TestClient(create_app(harness)) as tc:
        yield tc


def post(web: TestClient, schedule_id: str, action: str, **fields: str) -> httpx.Response:
    """POST a schedule action as the page's forms do, with the CSRF token the page carries."""
    token = csrf_token(web.get("/schedules").text)
    return web.post(
        f"/schedules/{schedule_id}/{action}", data={"csrf_token": token, **fields}, follow_redirects=False
    )


def row_of(html: str, schedule_id: str) -> str:
    start = html.index(f'data-schedule-id="{schedule_id}"')
    return html[start : html.index("</tr>", start)]


def test_the_page_lists_every_schedule(web: TestClient, harness: Harness) -> None:
    harness.advance("1h")  # every-hour fires once
    page = web.get("/schedules")
    assert page.status_code == 200
    html = page.text
    assert 'href="/schedules" aria-current="page"' in html  # in the navigation, current
    digest_row = row_of(html, "weekday-digest")
    assert "0 9 * * 1-5" in digest_row and "Europe/Paris" in digest_row
    assert "At 09:00 on Monday through Friday" in digest_row
    assert "2026-01-05 08:00:00" in digest_row and 'data-state="active"' in digest_row
    hourly = row_of(html, "every-hour")
    last_run = harness.get_schedule("every-hour").last_run_id
    assert last_run is not None and f'href="/runs/{last_run}"' in hourly and ">all<" in hourly
    assert html.index("every-hour") < html.index("weekday-digest")  # by id


def test_pause_resume_and_delete_with_confirmation(web: TestClient, harness: Harness) -> None:
    paused = post(web, "weekday-digest", "pause")
    assert paused.status_code == 303 and paused.headers["location"] == "/schedules?done=pause"
    assert harness.get_schedule("weekday-digest").paused
    after = web.get("/schedules?done=pause").text
    assert "Schedule paused" in after and 'data-state="paused"' in row_of(after, "weekday-digest")
    assert 'data-action="resume"' in row_of(after, "weekday-digest")
    assert post(web, "weekday-digest", "resume").status_code == 303
    assert not harness.get_schedule("weekday-digest").paused

    asked = post(web, "every-hour", "delete")
    assert asked.status_code == 200 and "Delete this schedule?" in asked.text
    assert [s.schedule_id for s in harness.list_schedules()] == ["every-hour", "weekday-digest"]
    token = csrf_token(asked.text)
    done = web.post(
        "/schedules/every-hour/delete", data={"csrf_token": token, "confirmed": "yes"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/schedules?done=delete"
    assert [s.schedule_id for s in harness.list_schedules()] == ["weekday-digest"]


def test_actions_without_the_csrf_token_or_from_another_site_are_refused(
    web: TestClient, harness: Harness
) -> None:
    web.get("/schedules")  # the cookie is set
    missing = web.post("/schedules/weekday-digest/pause", data={}, follow_redirects=False)
    assert missing.status_code == 403 and "security token" in missing.text
    token = csrf_token(web.get("/schedules").text)
    foreign = web.post(
        "/schedules/weekday-digest/pause", data={"csrf_token": token}, headers={"origin": "https://evil.example"},
        follow_redirects=False,
    )  # fmt: skip
    assert foreign.status_code == 403 and "another site" in foreign.text
    assert not harness.get_schedule("weekday-digest").paused


def test_unknown_schedules_and_actions_are_404(web: TestClient) -> None:
    unknown = post(web, "nope", "pause")
    assert unknown.status_code == 404 and "unknown schedule" in unknown.text
    assert post(web, "weekday-digest", "explode").status_code == 404


def test_read_only_shows_no_actions_and_refuses_them(harness: Harness) -> None:
    with TestClient(create_app(harness, read_only=True)) as web:
        html = web.get("/schedules").text
        assert "weekday-digest" in html and "<form" not in html and "data-action" not in html
        refused = web.post("/schedules/weekday-digest/pause", data={}, follow_redirects=False)
        assert refused.status_code == 403 and "read-only" in refused.text
    assert not harness.get_schedule("weekday-digest").paused


def test_without_schedules_the_page_says_how_to_make_one() -> None:
    with Harness([digest]) as h, TestClient(create_app(h)) as web:
        html = web.get("/schedules").text
        assert "No schedules yet" in html and "create_schedule" in html
