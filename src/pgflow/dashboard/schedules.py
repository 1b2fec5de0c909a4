"""The schedules page (SPEC §15, §16): every cron schedule with its next and last tick, and — unless
read-only — pause, resume and delete (confirmed on a page of its own), as POST forms with CSRF
protection. A form posts, then the browser is redirected back to the page with a fixed message."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pgflow import PgflowError
from pgflow.cron import explain

from .actions import _read_form as read_form
from .security import request_refusal
from .state import Dashboard, http_status

__all__ = ["SCHEDULE_ACTIONS", "SCHEDULE_MESSAGES", "schedule_action", "schedules_page"]

SCHEDULE_ACTIONS = {"pause": "pause_schedule", "resume": "resume_schedule", "delete": "delete_schedule"}
SCHEDULE_MESSAGES = {
    "pause": "Schedule paused: it starts nothing until it is resumed.",
    "resume": "Schedule resumed: it continues from its next tick.",
    "delete": "Schedule deleted; the runs it started stay.",
}


async def schedules_page(dash: Dashboard, request: Request) -> Response:
    """Every schedule, by id: its workflow, cron (explained) and zone, catch-up, state and ticks."""
    flash = SCHEDULE_MESSAGES.get(request.query_params.get("done", ""))
    return await _page(dash, request, flash=flash)


async def _page(
    dash: Dashboard,
    request: Request,
    *,
    flash: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    if not dash.client.has("list_schedules"):
        return dash.error_page(
            request, "This pgflow client has no schedules (they come with a newer pgflow).", 501
        )
    schedules = await dash.client.call("list_schedules")
    rows = [(s, explain(s.cron)) for s in schedules]
    context = {"rows": rows, "flash": flash, "error": error}
    return dash.renderer.page(request, "schedules.html", context, status)


async def schedule_action(dash: Dashboard, request: Request) -> Response:
    """``POST /schedules/{schedule_id}/{action}``: pause, resume or delete (after a confirmation)."""
    schedule_id, name = request.path_params["schedule_id"], request.path_params["action"]
    method = SCHEDULE_ACTIONS.get(name)
    if method is None:
        return dash.error_page(request, f"There is no schedule action {name!r}.", 404)
    if dash.read_only:
        return await _page(dash, request, error="This dashboard is read-only.", status=403)
    form = await read_form(request)
    if form is None:
        return await _page(dash, request, error="The form is too large.", status=413)
    refusal = request_refusal(request, form)
    if refusal is not None:
        return await _page(dash, request, error=refusal, status=403)
    if name == "delete" and form.get("confirmed") != "yes":
        return dash.renderer.page(request, "confirm_delete_schedule.html", {"schedule_id": schedule_id})
    try:
        await dash.client.call(method, schedule_id)
    except PgflowError as exc:
        return await _page(dash, request, error=str(exc), status=http_status(exc))
    return RedirectResponse(request.url_for("schedules").path + f"?done={name}", status_code=303)
