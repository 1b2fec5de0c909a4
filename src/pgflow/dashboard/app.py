"""``create_app(client, *, read_only=False)``: the dashboard as an ASGI application (Starlette)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pgflow import PgflowError

from . import actions, pages, schedules
from .adapter import ClientAdapter
from .render import Renderer
from .security import SecurityHeaders
from .state import Dashboard, http_status

__all__ = ["create_app"]

Handler = Callable[[Dashboard, Request], Awaitable[Response]]


def create_app(client: object, *, read_only: bool = False) -> Starlette:
    """The dashboard for ``client`` — a ``pgflow.Client``, ``Engine``, ``AsyncClient`` or a
    ``pgflow.testing.Harness`` — as an ASGI app to serve, or to mount behind your own authentication.
    ``read_only=True`` shows no actions and refuses every POST (403)."""
    dash = Dashboard(ClientAdapter(client), Renderer(read_only=read_only), read_only)
    return Starlette(
        routes=_routes(dash),
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            PgflowError: functools.partial(_pgflow_error, dash),
            HTTPException: functools.partial(_http_error, dash),
        },
    )


def _routes(dash: Dashboard) -> list[BaseRoute]:
    def page(path: str, handler: Handler, name: str, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, functools.partial(handler, dash), name=name, methods=list(methods))

    return [
        Route("/", _to_runs, name="home"),
        page("/runs", pages.runs_page, "runs"),
        page("/runs/{run_id}", pages.run_page, "run"),
        page("/runs/{run_id}/live", pages.live_fragment, "run_live"),
        page("/runs/{run_id}/{action}", actions.perform, "run_action", ("POST",)),
        page("/workflows", pages.workflows_page, "workflows"),
        page("/schedules", schedules.schedules_page, "schedules"),
        page("/schedules/{schedule_id}/{action}", schedules.schedule_action, "schedule_action", ("POST",)),
        Mount("/static", _Static(packages=[("pgflow.dashboard", "static")]), name="static"),
    ]


async def _to_runs(request: Request) -> Response:
    return RedirectResponse(request.url_for("runs").path, status_code=307)


class _Static(StaticFiles):
    """The package's CSS, JS and icon; cacheable (their URLs carry the asset version)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=86400"
        return response


async def _pgflow_error(dash: Dashboard, request: Request, exc: Exception) -> Response:
    """A pgflow error raised while reading (unknown run, bad cursor…): its message, its status."""
    assert isinstance(exc, PgflowError)
    return dash.error_page(request, str(exc), http_status(exc))


async def _http_error(dash: Dashboard, request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "There is no such page.", 405: "This address does not take that method."}
    return dash.error_page(request, messages.get(exc.status_code, exc.detail), exc.status_code)
