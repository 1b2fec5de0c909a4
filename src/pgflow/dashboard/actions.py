"""The actions (POST, CSRF-protected, refused in read-only mode): trigger an event, pause, resume,
cancel (confirmed), fast-forward, retry.

Without JavaScript a form posts, then the browser is redirected to the run page (303) with a fixed
message. The page's script posts the same forms with ``Accept: application/json`` and gets JSON back,
so the page stays and its live refresh shows the effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from pgflow import PgflowError, RunNotFoundError

from .pages import FLASH_MESSAGES
from .runview import load_run_view
from .security import request_refusal
from .state import Dashboard, http_status

__all__ = ["ACTIONS", "perform"]

MAX_FORM_BYTES = 1_000_000


class FormError(Exception):
    """A form value that cannot be used (e.g. event data that is not JSON): 400, said on the page."""


@attrs.frozen
class Action:
    method: str  # the client method
    arguments: Callable[[dict[str, str]], tuple[Any, ...]] = lambda form: ()


def _event_arguments(form: dict[str, str]) -> tuple[Any, ...]:
    name = form.get("event", "").strip()
    if not name:
        raise FormError("Give the event a name.")
    text = form.get("data", "").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError as exc:
        raise FormError(f"The event data is not valid JSON: {exc}.") from None
    return (name, data)


ACTIONS: dict[str, Action] = {
    "event": Action("trigger_event", _event_arguments),
    "pause": Action("pause_workflow"),
    "resume": Action("resume_workflow"),
    "cancel": Action("cancel_workflow"),
    "fast-forward": Action("fast_forward_workflow"),
    "retry": Action("retry_workflow"),
}


async def perform(dash: Dashboard, request: Request) -> Response:
    """``POST /runs/{run_id}/{action}``."""
    run_id, name = request.path_params["run_id"], request.path_params["action"]
    action = ACTIONS.get(name)
    if action is None:
        return dash.error_page(request, f"There is no action {name!r}.", 404)
    if dash.read_only:
        return await _refuse(dash, request, run_id, "This dashboard is read-only.", 403)
    form = await _read_form(request)
    if form is None:
        return await _refuse(dash, request, run_id, "The form is too large.", 413)
    refusal = request_refusal(request, form)
    if refusal is not None:
        return await _refuse(dash, request, run_id, refusal, 403)
    if name == "cancel" and form.get("confirmed") != "yes":
        return dash.renderer.page(request, "confirm_cancel.html", {"run_id": run_id})
    if not dash.client.has(action.method):
        message = f"This pgflow client has no {action.method}() (it comes with a newer pgflow)."
        return await _refuse(dash, request, run_id, message, 501)
    try:
        await dash.client.call(action.method, run_id, *action.arguments(form))
    except FormError as exc:
        return await _refuse(dash, request, run_id, str(exc), 400, form)
    except PgflowError as exc:
        return await _refuse(dash, request, run_id, str(exc), http_status(exc), form)
    return _done(dash, request, run_id, name)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _done(dash: Dashboard, request: Request, run_id: str, name: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": True, "message": FLASH_MESSAGES[name]})
    target = request.url_for("run", run_id=run_id).path + f"?done={name}"
    return RedirectResponse(target, status_code=303)


async def _refuse(
    dash: Dashboard,
    request: Request,
    run_id: str,
    message: str,
    status: int,
    form: dict[str, str] | None = None,
) -> Response:
    """Say why, with the status: as JSON to the script, else on the run page (the event form keeps
    what was typed), or on an error page when the run itself cannot be shown."""
    if _wants_json(request):
        return JSONResponse({"ok": False, "error": message}, status_code=status)
    try:
        view = await load_run_view(dash.client, run_id, read_only=dash.read_only)
    except RunNotFoundError:
        return dash.error_page(request, message, status)
    except PgflowError as exc:
        return dash.error_page(request, str(exc), http_status(exc))
    context = {"view": view, "error": message, "event_form": form or {}}
    return dash.renderer.page(request, "run.html", context, status)


async def _read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form (the only kind the pages send); None when it is too large."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
