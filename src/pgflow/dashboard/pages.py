"""The pages (GET): runs, one run (and its live fragment), workflows."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import attrs
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from pgflow import InvalidArgumentError, RunStatus

from .runview import load_run_view
from .state import Dashboard

__all__ = ["FLASH_MESSAGES", "RunFilters", "live_fragment", "run_page", "runs_page", "workflows_page"]

PAGE_SIZE = 50
STATUSES = tuple(s.value for s in RunStatus)

# What a successful action says after its redirect (``?done=KEY``): fixed texts, so a link cannot
# make the page say anything else.
FLASH_MESSAGES = {
    "event": "Event delivered to the run's mailbox.",
    "pause": "Run paused: nothing further executes until it is resumed.",
    "resume": "Run resumed.",
    "cancel": "Run cancelled.",
    "fast-forward": "Wait skipped.",
    "retry": "Run retried: it is pending again.",
}


@attrs.frozen
class RunFilters:
    """The runs page's query: filters and a cursor (``after`` = older page, ``before`` = newer)."""

    status: str | None = None
    workflow: str | None = None
    resource: str | None = None
    after: str | None = None
    before: str | None = None

    @classmethod
    def from_query(cls, params: QueryParams) -> RunFilters:
        found = {f.name: (params.get(f.name) or "").strip() or None for f in attrs.fields(cls)}
        status = found["status"]
        if status is not None and status not in STATUSES:
            raise InvalidArgumentError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        return cls(**found)

    @property
    def filtered(self) -> bool:
        return any((self.status, self.workflow, self.resource))

    def query(self, **changes: str | None) -> str:
        """This query with ``changes``, as ``?a=b…`` (empty when nothing is set)."""
        values = attrs.asdict(attrs.evolve(self, **changes))
        pairs = {k: v for k, v in values.items() if v is not None}
        return "?" + urlencode(pairs) if pairs else ""

    def get_runs_arguments(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow, "resource_id": self.resource,
            "statuses": [self.status] if self.status else None, "limit": PAGE_SIZE,
            "starting_after": self.after, "ending_before": self.before,
        }  # fmt: skip


async def runs_page(dash: Dashboard, request: Request) -> Response:
    """Runs newest first, filtered, a page at a time, with counts by status."""
    filters = RunFilters.from_query(request.query_params)
    page, counts, workflows = await asyncio.gather(
        dash.client.call("get_runs", **filters.get_runs_arguments()),
        dash.client.call("count_runs", workflow_id=filters.workflow, resource_id=filters.resource),
        dash.client.call("list_workflows"),
    )
    context = {
        "page": page, "counts": counts, "total": sum(counts.values()), "filters": filters,
        "workflow_ids": [w.id for w in workflows], "now": dash.client.now(),
    }  # fmt: skip
    return dash.renderer.page(request, "runs.html", context)


async def run_page(dash: Dashboard, request: Request) -> Response:
    """One run: its state, what it waits for, its timeline, mailbox and children, and the actions."""
    view = await load_run_view(dash.client, request.path_params["run_id"], read_only=dash.read_only)
    flash = FLASH_MESSAGES.get(request.query_params.get("done", ""))
    return dash.renderer.page(request, "run.html", {"view": view, "flash": flash, "event_form": {}})


async def live_fragment(dash: Dashboard, request: Request) -> Response:
    """The changing parts of the run page, fetched every second by the page's script."""
    view = await load_run_view(dash.client, request.path_params["run_id"], read_only=dash.read_only)
    return dash.renderer.page(request, "run_live.html", {"view": view})


async def workflows_page(dash: Dashboard, request: Request) -> Response:
    """Every registered workflow: its static steps and its runs counted by status."""
    workflows = await dash.client.call("list_workflows")
    counts = await asyncio.gather(*(dash.client.call("count_runs", workflow_id=w.id) for w in workflows))
    rows = list(zip(workflows, counts, strict=True))
    return dash.renderer.page(request, "workflows.html", {"rows": rows})
