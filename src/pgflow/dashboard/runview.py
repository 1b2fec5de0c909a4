"""What the run page shows, gathered from the public client API in one go (and which actions fit)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import attrs

from pgflow import TERMINAL, Event, Progress, RunStatus, WorkflowRun

from .adapter import ClientAdapter
from .timeline import Timeline, build_timeline

__all__ = ["RunView", "available_actions", "load_run_view"]


@attrs.frozen
class RunView:
    run: Progress  # the run, with completed_steps, total_steps and completion_percentage
    timeline: Timeline
    mailbox: list[Event]
    children: list[WorkflowRun]
    actions: frozenset[str]
    now: datetime

    @property
    def running_step(self) -> str | None:
        """The step executing now: its record says ``running`` (SPEC §13)."""
        return next((r.record.step_id for r in self.timeline.rows if r.record.status == "running"), None)

    @property
    def buttons(self) -> frozenset[str]:
        """The actions shown as buttons (the event has a form of its own)."""
        return self.actions - {"event"}

    @property
    def terminal(self) -> bool:
        return self.run.status in TERMINAL


def available_actions(run: WorkflowRun, *, can_retry: bool) -> frozenset[str]:
    """The actions that make sense for the run as it is now (the client checks again, atomically)."""
    if run.status in TERMINAL:
        can = can_retry and run.status in (RunStatus.FAILED, RunStatus.CANCELLED)
        return frozenset({"retry"} if can else ())
    found = {"event", "cancel"}
    if not run.held:
        found.add("pause")
    if run.held or (run.waiting is not None and run.waiting.kind == "pause"):
        found.add("resume")
    if run.held or run.waiting is not None:
        found.add("fast-forward")
    return frozenset(found)


async def load_run_view(client: ClientAdapter, run_id: str, *, read_only: bool) -> RunView:
    """The run (with its progress), its mailbox and its children, read concurrently."""
    run, mailbox, children = await asyncio.gather(
        client.call("check_progress", run_id),
        client.call("get_mailbox", run_id),
        client.call("get_child_runs", run_id),
    )
    now = client.now()
    actions = frozenset() if read_only else available_actions(run, can_retry=client.has("retry_workflow"))
    return RunView(run, build_timeline(run, now), mailbox, children, actions, now)
