"""Log record attributes about runs: every library record about a run carries ``pgflow_run_id``,
``pgflow_workflow_id`` and, where they apply, ``pgflow_step_id`` and ``pgflow_attempt`` (SPEC §13),
so JSON formatters can index them."""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

__all__ = ["JsonFormatter", "log_extra", "run_extra"]


class _RunLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def workflow_id(self) -> str: ...
    @property
    def retry_count(self) -> int: ...


def log_extra(
    run_id: str, workflow_id: str, step_id: str | None = None, attempt: int | None = None
) -> dict[str, Any]:
    """The ``extra=`` of a record about a run (and a step of it)."""
    extra: dict[str, Any] = {"pgflow_run_id": run_id, "pgflow_workflow_id": workflow_id}
    if step_id is not None:
        extra["pgflow_step_id"] = step_id
    if attempt is not None:
        extra["pgflow_attempt"] = attempt
    return extra


def run_extra(run: _RunLike, step_id: str | None = None, attempt: int | None = None) -> dict[str, Any]:
    """``log_extra`` for a run row: ``pgflow_attempt`` is the step's attempt when a step is named,
    else the run's attempt (1 for the first)."""
    if attempt is None:
        attempt = run.retry_count + 1
    return log_extra(run.id, run.workflow_id, step_id, attempt)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, every ``pgflow_*``
    attribute of the record, and ``traceback`` when there is one (``pgflow worker --log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update((key, value) for key, value in vars(record).items() if key.startswith("pgflow_"))
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)
