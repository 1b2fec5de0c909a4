"""How the ``pgflow`` command line shows runs: JSON objects, tables, the step-by-step timeline."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .records import TERMINAL, RunStatus, StepRecord, WorkflowRun
from .serde import to_json


def run_to_json(run: WorkflowRun) -> dict[str, Any]:
    """A run as a JSON object: ``WorkflowRun``'s fields, ``timeline`` as a list of step records."""
    data: dict[str, Any] = {}
    for field in attrs.fields(WorkflowRun):
        value = getattr(run, field.name)
        if field.name == "timeline":
            data["timeline"] = [to_json(record, root="timeline") for record in value.values()]
        else:
            data[field.name] = to_json(value, root=field.name)
    return data


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _when(value: datetime | None, precise: bool = False) -> str:
    if value is None:
        return "-"
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{value.microsecond // 1000:03d}" if precise else text


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _compact(value: Any, width: int = 100) -> str:
    text = json.dumps(to_json(value), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def one_line(text: str, width: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return lines


def _status_text(run: WorkflowRun, held_back: bool = False) -> str:
    """The run's status in words: what it waits for, whether it is held, when it wakes."""
    status = run.status.value
    parts: list[str] = []
    if held_back:
        parts.append("waiting for a concurrency slot (it starts when a run of its workflow ends)")
    if run.held:
        parts.append("held (resume with `pgflow resume`)")
    waiting = run.waiting
    if waiting is not None:
        if waiting.kind == "wait_for":
            parts.append(f"waiting at {waiting.step_id!r} for event {waiting.event!r}")
        elif waiting.kind == "pause":
            parts.append(f"paused at step {waiting.step_id!r} (resume with `pgflow resume`)")
        elif waiting.kind == "child":
            parts.append(f"waiting at {waiting.step_id!r} for its child run")
        elif waiting.kind == "poll":
            parts.append(f"polling at {waiting.step_id!r}")
        else:
            parts.append(f"waiting at {waiting.step_id!r} ({waiting.kind})")
    if run.status == RunStatus.PENDING and run.retry_count and run.wake_at is not None:
        parts.append(f"retry {run.retry_count} of {run.max_retries} due {_when(run.wake_at)}")
    elif run.wake_at is not None and run.status not in (
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    ):
        parts.append(f"next wake-up {_when(run.wake_at)} UTC")
    return status + (f" — {'; '.join(parts)}" if parts else "")


def runs_table(runs: Sequence[WorkflowRun]) -> list[str]:
    """The runs as a table; the KEY and PRIORITY columns only when a run on the page has one."""
    flow = any(run.concurrency_key is not None or run.priority for run in runs)
    rows = []
    for run in runs:
        status = run.status.value + (" (held)" if run.held else "")
        row = [
            run.id,
            run.workflow_id,
            status,
            run.current_step_id or "-",
            _when(run.created_at),
            _when(run.updated_at),
        ]
        rows.append(row + ([run.concurrency_key or "-", str(run.priority)] if flow else []))
    headers = ["ID", "WORKFLOW", "STATUS", "CURRENT STEP", "CREATED (UTC)", "UPDATED (UTC)"]
    return _table(headers + (["KEY", "PRIORITY"] if flow else []), rows)


def _step_rows(run: WorkflowRun) -> list[list[str]]:
    rows = []
    for index, record in enumerate(run.timeline.values(), 1):
        rows.append(
            [
                str(index),
                record.step_id,
                record.kind,
                record.status + (" (timed out)" if record.timed_out else ""),
                str(record.attempts),
                _step_duration(record),
                _step_detail(record),
            ]
        )
    return rows


def _step_duration(record: StepRecord) -> str:
    if record.started_at is None:
        return "-"
    if record.completed_at is None:
        return "…"
    return _duration(max(0.0, (record.completed_at - record.started_at).total_seconds()))


def _step_detail(record: StepRecord) -> str:
    if record.error is not None:
        return one_line(f"{record.error.type}: {record.error.message}")
    if record.status == "waiting":
        bits = []
        if record.event:
            bits.append(f"event {record.event!r}")
        if record.wake_at is not None:
            bits.append(f"next {_when(record.wake_at)}")
        if record.timeout_at is not None:
            bits.append(f"times out {_when(record.timeout_at)}")
        return ", ".join(bits)
    if record.timed_out:
        return "timed out"
    return "" if record.output is None else "→ " + _compact(record.output, 60)


def show_lines(run: WorkflowRun, progress: Any = None, *, held_back: bool = False) -> list[str]:
    def row(label: str, value: str) -> str:
        return f"{label:<12}{value}"

    lines = [
        row("Run", run.id),
        row("Workflow", run.workflow_id),
        row("Status", _status_text(run, held_back)),
    ]
    if progress is not None:
        lines.append(
            row(
                "Progress",
                f"{progress.completion_percentage:g}% ({progress.completed_steps} of {plural(progress.total_steps, 'step')})",
            )
        )
    if run.resource_id is not None:
        lines.append(row("Resource", run.resource_id))
    if run.parent_run_id is not None:
        lines.append(row("Parent", f"{run.parent_run_id} (step {run.parent_step_id})"))
    if run.idempotency_key is not None:
        lines.append(row("Idem. key", run.idempotency_key))
    if run.concurrency_key is not None:
        lines.append(row("Conc. key", run.concurrency_key))
    if run.priority:
        lines.append(row("Priority", str(run.priority)))
    lines.append(row("Retries", f"{run.retry_count} of {run.max_retries}"))
    lines.append(row("Created", f"{_when(run.created_at, True)} UTC"))
    lines.append(row("Updated", f"{_when(run.updated_at, True)} UTC"))
    for label, value in (
        ("Paused", run.paused_at),
        ("Resumed", run.resumed_at),
        ("Completed", run.completed_at),
        ("Times out", None if run.status in TERMINAL else run.timeout_at),
    ):
        if value is not None:
            lines.append(row(label, f"{_when(value, True)} UTC"))
    lines.extend(_value_lines(row("Input", ""), run.input))
    if run.output is not None or run.status == RunStatus.COMPLETED:
        lines.extend(_value_lines(row("Output", ""), run.output))
    if run.error is not None:
        where = f" (at step {run.error.step_id!r})" if run.error.step_id else ""
        lines.append(row("Error", f"{run.error.type}: {run.error.message}{where}"))
        if run.error.traceback:
            lines.extend("            " + line for line in run.error.traceback.rstrip().splitlines())
    lines.append("")
    if run.timeline:
        lines.append(f"Timeline ({plural(len(run.timeline), 'step')})")
        table = _table(
            ["#", "STEP", "KIND", "STATUS", "ATTEMPTS", "DURATION", "RESULT / ERROR / WAITING"],
            _step_rows(run),
        )
        lines.extend("  " + line for line in table)
    else:
        lines.append("Timeline: no step recorded yet")
    return lines


def _value_lines(label: str, value: Any) -> list[str]:
    """``label`` and a JSON value: on one line when short, else indented below the label."""
    text = json.dumps(to_json(value), ensure_ascii=False, sort_keys=True)
    if len(label) + len(text) <= 100:
        return [label + text]
    pretty = json.dumps(to_json(value), ensure_ascii=False, sort_keys=True, indent=2).splitlines()
    return [label + pretty[0], *(" " * len(label) + line for line in pretty[1:])]


def summary(run: WorkflowRun, done: str) -> str:
    return f"{done} run {run.id} ({run.workflow_id}): now {_status_text(run)}"
