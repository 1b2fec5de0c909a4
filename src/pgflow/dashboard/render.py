"""Rendering pages: the Jinja2 environment (autoescape on), the page context every template gets,
and the CSRF cookie a first visit receives with its page."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from pgflow import RunStatus

from .formatting import FILTERS
from .security import CSRF_FIELD, csrf_token, remember_csrf_token

__all__ = ["NAV", "Renderer"]

# The navigation: (route name, label).
NAV: tuple[tuple[str, str], ...] = (("runs", "Runs"), ("workflows", "Workflows"), ("schedules", "Schedules"))
STATUSES = tuple(s.value for s in RunStatus)


def _asset_version() -> str:
    """A digest of the static files: their URLs change when they do, so caches never serve old ones."""
    digest = hashlib.sha256()
    for entry in sorted(
        resources.files("pgflow.dashboard").joinpath("static").iterdir(), key=lambda e: e.name
    ):
        digest.update(entry.read_bytes())
    return digest.hexdigest()[:12]


ASSET_VERSION = _asset_version()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pgflow.dashboard", "templates"),
        autoescape=True,  # every value is escaped, whatever the template's file name
        undefined=jinja2.StrictUndefined,  # a typo in a template is an error, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(path_for=_path_for, static=_static, STATUSES=STATUSES, CSRF_FIELD=CSRF_FIELD, NAV=NAV)
    return env


@jinja2.pass_context
def _path_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    """A route's path (under the mount point when the dashboard is mounted), without scheme or host,
    so links keep working behind a proxy."""
    request: Request = context["request"]
    return str(request.url_for(name, **params).path)


@jinja2.pass_context
def _static(context: Mapping[str, Any], file: str) -> str:
    return f"{_path_for(context, 'static', path=file)}?v={ASSET_VERSION}"


class Renderer:
    """Renders templates with what every page needs (read-only flag, CSRF token, navigation)."""

    def __init__(self, *, read_only: bool) -> None:
        self.read_only = read_only
        self._templates = Jinja2Templates(env=_environment())

    def page(self, request: Request, name: str, context: Mapping[str, Any], status: int = 200) -> Response:
        full = {"read_only": self.read_only, "csrf_token": csrf_token(request), "flash": None, "error": None}
        full.update(context)
        response = self._templates.TemplateResponse(request, name, full, status_code=status)
        remember_csrf_token(request, response)
        return response
