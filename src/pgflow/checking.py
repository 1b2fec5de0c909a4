"""Checking new workflow code against recorded histories before it is deployed (SPEC §14).

:func:`check_replay` replays the recorded history of runs in flight against the given code, as a
worker would after the deploy, but stops where the worker would execute a step or wait: no step
runs, nothing is written. A run whose replay diverges (``NonDeterminismError``, ``DuplicateStepError``)
or whose replay raises in workflow code is reported. :func:`replay_run` is the one-run form, used by
``pgflow.testing.replay`` on exported histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs
import pendulum

from .arguments import check_int, shown
from .definition import Workflow
from .errors import DuplicateStepError, InvalidArgumentError, NonDeterminismError, PgflowError
from .operations import Operations, _statuses
from .records import TERMINAL, RunError, RunStatus, StepRecord, WorkflowRun
from .replay import Complete, Decision, Execute, Fail, Replayer, ReplayInput, Suspend

__all__ = ["ReplayDivergence", "ReplayReport", "check_replay", "replay_run", "replayed_run"]

DIVERGENCES = (NonDeterminismError.__name__, DuplicateStepError.__name__)
_LIVE = tuple(s.value for s in RunStatus if s not in TERMINAL)
_PAGE = 100


@attrs.frozen
class ReplayDivergence:
    """A run whose recorded history the new code does not replay."""

    run_id: str
    workflow_id: str
    error_type: str
    message: str


@attrs.frozen
class ReplayReport:
    """What :func:`check_replay` found: how many runs it replayed, and those that diverged."""

    checked: int
    diverged: tuple[ReplayDivergence, ...]

    @property
    def ok(self) -> bool:
        return not self.diverged


def check_replay(
    source: Any, workflows: Iterable[Workflow], *, statuses: Any = None, workflow_ids: Any = None,
    limit: int = 1000,
) -> ReplayReport:  # fmt: skip
    """Replay stored runs of ``workflows`` (default: every non-terminal run) against this code.

    ``source`` is an ``Engine``, ``Client`` or ``Harness``: its runs are read with ``get_runs``.
    Executes no step and writes nothing."""
    if not isinstance(source, Operations):
        raise InvalidArgumentError(f"source must be an Engine, Client or Harness, got {shown(source)}")
    code = _workflows(workflows)
    wanted = _workflow_ids(workflow_ids, code)
    check_int(limit, "limit", 1, 1_000_000)
    chosen = _LIVE if statuses is None else _statuses(statuses)
    now = source._now()
    checked, diverged = 0, []
    for run in _runs(source, wanted, chosen, limit):
        checked += 1
        problem = _replay_problem(code[run.workflow_id], run, now)
        if problem is not None:
            diverged.append(ReplayDivergence(run.id, run.workflow_id, problem.type, problem.message))
    return ReplayReport(checked, tuple(diverged))


def _workflows(workflows: Iterable[Workflow]) -> dict[str, Workflow]:
    if isinstance(workflows, Workflow):
        workflows = [workflows]
    found: dict[str, Workflow] = {}
    for wf in workflows:
        if not isinstance(wf, Workflow):
            raise InvalidArgumentError(
                f"workflows must be Workflow objects (from @workflow), got {shown(wf)}"
            )
        found[wf.id] = wf
    return found


def _workflow_ids(workflow_ids: Any, code: Mapping[str, Workflow]) -> list[str]:
    if workflow_ids is None:
        return sorted(code)
    ids = [workflow_ids] if isinstance(workflow_ids, str) else list(workflow_ids)
    unknown = [wid for wid in ids if wid not in code]
    if unknown:
        raise InvalidArgumentError(f"workflow_ids names workflows without code to check: {shown(unknown)}")
    return ids


def _runs(
    source: Any, workflow_ids: list[str], statuses: tuple[str, ...], limit: int
) -> Iterator[WorkflowRun]:
    """Up to ``limit`` runs of these workflows in these statuses, newest first, page by page."""
    left = limit
    for wid in workflow_ids:
        cursor = None
        while left > 0:
            page = source.get_runs(workflow_id=wid, statuses=list(statuses), limit=min(_PAGE, left),
                                   starting_after=cursor)  # fmt: skip
            yield from page.items
            left -= len(page.items)
            if not page.has_more:
                break
            cursor = page.next_cursor


def _replay_problem(workflow: Workflow, run: WorkflowRun, now: pendulum.DateTime) -> RunError | None:
    """Why the run's history does not replay on this code, or None when it does."""
    try:
        decision = replay_run(workflow, run, now)
    except PgflowError as exc:  # e.g. the stored input no longer fits the workflow's input schema
        return RunError(type(exc).__name__, str(exc))
    action = decision.action
    if not isinstance(action, Fail):
        return None
    if action.error.type in DIVERGENCES:
        return action.error
    recorded = run.error
    if recorded is not None and (recorded.type, recorded.message) == (
        action.error.type,
        action.error.message,
    ):
        return None  # it failed like this when it ran: the code replays its history
    return action.error


def replay_run(workflow: Workflow, run: WorkflowRun, now: pendulum.DateTime) -> Decision:
    """Replay ``run``'s recorded steps on ``workflow`` up to its next decision (nothing executes)."""
    info = ReplayInput(run.id, run.workflow_id, run.resource_id, run.retry_count, run.input,
                       supports_transactions=True)  # fmt: skip
    replayer = Replayer(workflow, info, dict(run.timeline))
    try:
        return replayer.decide(now, ())
    finally:
        replayer.close()


def replayed_run(run: WorkflowRun, decision: Decision, now: pendulum.DateTime) -> WorkflowRun:
    """The run as it would stand after ``decision`` (for ``pgflow.testing.replay``)."""
    timeline: dict[str, StepRecord] = {
        sid: r for sid, r in run.timeline.items() if sid not in decision.discards
    }
    timeline.update((r.step_id, r) for r in decision.writes)
    action = decision.action
    fields: dict[str, Any] = {"timeline": timeline, "updated_at": now, "error": None, "waiting": None}
    if isinstance(action, Complete):
        fields |= {"status": RunStatus.COMPLETED, "output": action.output, "completed_at": now}
    elif isinstance(action, Suspend):
        status = RunStatus.PAUSED if action.waiting is not None else RunStatus.PENDING
        fields |= {"status": status, "waiting": action.waiting, "wake_at": action.wake_at}
    elif isinstance(action, Execute):
        timeline.update((r.step_id, r) for _, r in action.steps)
        fields |= {"status": RunStatus.RUNNING, "current_step_id": action.steps[0][1].step_id}
    else:
        assert isinstance(action, Fail)
        if action.error.type in DIVERGENCES:
            raise (DuplicateStepError if action.error.type == "DuplicateStepError" else NonDeterminismError)(
                action.error.message
            )
        fields |= {"status": RunStatus.FAILED, "error": action.error, "completed_at": now}
    return attrs.evolve(run, **fields)
