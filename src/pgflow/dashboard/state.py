"""What every handler shares (the client, the renderer, the read-only flag) and how pgflow errors
become HTTP statuses and messages."""

from __future__ import annotations

import attrs
from starlette.requests import Request
from starlette.responses import Response

from pgflow import (
    InvalidArgumentError,
    InvalidInputError,
    InvalidStateError,
    PgflowError,
    RunNotFoundError,
    ScheduleNotFoundError,
    StorageError,
    UnknownWorkflowError,
)

from .adapter import ClientAdapter
from .render import Renderer

__all__ = ["Dashboard", "http_status"]

_STATUS_BY_ERROR: tuple[tuple[type[PgflowError], int], ...] = (
    (RunNotFoundError, 404),
    (ScheduleNotFoundError, 404),
    (InvalidStateError, 409),
    (InvalidArgumentError, 400),
    (InvalidInputError, 400),
    (UnknownWorkflowError, 400),
    (StorageError, 503),
)


def http_status(exc: PgflowError) -> int:
    """404 for an unknown run or schedule, 409 for an action the run's state refuses, 400 for bad input, 503
    when the database fails, 500 for anything else."""
    return next((status for kind, status in _STATUS_BY_ERROR if isinstance(exc, kind)), 500)


@attrs.frozen
class Dashboard:
    client: ClientAdapter
    renderer: Renderer
    read_only: bool

    def error_page(self, request: Request, message: str, status: int) -> Response:
        """A page saying what went wrong (never a traceback)."""
        return self.renderer.page(request, "error.html", {"message": message, "status": status}, status)
