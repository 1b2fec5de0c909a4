"""``pgflow check`` and ``pgflow export``: code changes checked against recorded histories (SPEC §14).

``check`` replays the histories of runs in flight against the workflows of a module, as a worker
would after the deploy, without executing a step or writing a row: the check a team runs in CI before
deploying. ``export`` prints a run and its history as JSON, for ``pgflow.testing.replay`` fixtures.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .checking import check_replay
from .cli_base import STATUSES, Options, UsageError, _client, _import_target, _module_workflows, _positive_int
from .cli_render import plural, print_json, run_to_json
from .definition import Workflow
from .errors import PgflowError

__all__ = ["COMMANDS", "add_parsers"]

AddParser = Callable[..., argparse.ArgumentParser]


def add_parsers(add: AddParser) -> None:
    check = add(
        "check",
        "replay runs in flight against new workflow code (before deploying it)",
        "Replay the recorded history of runs (default: every run not ended yet) against the workflows "
        "of MODULE (or the Engine MODULE:ATTR), as a worker would after a deploy, without executing a "
        "step or writing anything. Prints each run the code no longer replays; exit 1 if any.",
    )
    check.add_argument(
        "target", metavar="MODULE[:ATTR]", help="e.g. myapp.workflows or myapp.workflows:engine"
    )
    check.add_argument(
        "--workflow", action="append", metavar="WORKFLOW_ID", help="only this workflow (repeatable)"
    )
    check.add_argument("--status", action="append", metavar="STATUS", help=f"only runs in this status (repeatable): {', '.join(STATUSES)}")  # fmt: skip
    check.add_argument("--limit", type=_positive_int, default=1000, metavar="N", help="runs to check at most (default: 1000)")  # fmt: skip
    export = add("export", "print a run and its history as JSON (a fixture for pgflow.testing.replay)")
    export.add_argument("run_id", metavar="RUN_ID")


def cmd_check(opts: Options) -> int:
    args = opts.args
    workflows = _workflows_of(args.target)
    statuses = _status_list(args.status)
    with _client(opts) as client:
        report = check_replay(
            client, workflows, statuses=statuses, workflow_ids=args.workflow, limit=args.limit
        )
    if opts.json:
        print_json({"checked": report.checked, "diverged": [_divergence(d) for d in report.diverged]})
        return 0 if report.ok else 1
    for d in report.diverged:
        print(f"DIVERGED {d.run_id} ({d.workflow_id}): {d.error_type}: {d.message}")
    verdict = "all replay" if report.ok else f"{plural(len(report.diverged), 'run')} diverged"
    print(
        f"checked {plural(report.checked, 'run')} of {', '.join(sorted(w.id for w in workflows))}: {verdict}"
    )
    return 0 if report.ok else 1


def cmd_export(opts: Options) -> int:
    with _client(opts) as client:
        print_json(run_to_json(client.get_run(opts.args.run_id)))
    return 0


COMMANDS: dict[str, Callable[[Options], int]] = {"check": cmd_check, "export": cmd_export}


def _workflows_of(target: str) -> list[Workflow]:
    """The workflows to check: an Engine's (MODULE:ATTR), or a module's Workflow objects."""
    from .engine import Engine

    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise UsageError(f"expected MODULE or MODULE:ATTR, got {target!r}")
    found: Any = _import_target(module_name)
    for part in attr.split(".") if attr else ():
        if not hasattr(found, part):
            raise PgflowError(f"module {module_name!r} has no attribute {attr!r}")
        found = getattr(found, part)
    if isinstance(found, Engine):
        return list(found.workflows.values())
    if attr:
        raise PgflowError(f"{target} is a {type(found).__name__}, not a pgflow.Engine")
    workflows = _module_workflows(found)
    if not workflows:
        raise PgflowError(f"module {module_name!r} has no pgflow.Workflow objects at module level")
    return workflows


def _status_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    statuses = [s.strip() for value in values for s in value.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise UsageError(f"unknown status {unknown[0]!r}: use one of {', '.join(STATUSES)}")
    return statuses


def _divergence(d: Any) -> dict[str, str]:
    return {
        "run_id": d.run_id,
        "workflow_id": d.workflow_id,
        "error_type": d.error_type,
        "message": d.message,
    }
