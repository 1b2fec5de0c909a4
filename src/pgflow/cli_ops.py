"""``pgflow start``: start a run of a registered workflow from the command line (SPEC §15), and wait
for it with ``--wait``; ``pgflow retry``: re-drive a failed or cancelled run (SPEC §14)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .cli_base import Options, _client, _duration, _json_arg
from .cli_render import print_json, run_to_json, summary
from .records import TERMINAL, RunStatus

__all__ = ["COMMANDS", "add_parsers"]

AddParser = Callable[..., argparse.ArgumentParser]


def add_parsers(add: AddParser) -> None:
    start = add(
        "start",
        "start a run of a registered workflow",
        "Start a run of WORKFLOW (an id some engine registered in this database) with --input as its "
        "input; with --wait, wait until it ends (exit 0 when it completed, 1 otherwise).",
    )
    start.add_argument("workflow", metavar="WORKFLOW")
    start.add_argument("--input", metavar="JSON", help="the run's input as JSON (default: none)")
    start.add_argument(
        "--resource", metavar="RESOURCE_ID", help="tie the run to this resource (tenant, user…)"
    )
    start.add_argument(
        "--idempotency-key", metavar="KEY", help="a second start with this key returns the first run"
    )
    start.add_argument(
        "--concurrency-key", metavar="KEY", help="the key the workflow's key_concurrency limit counts by"
    )
    start.add_argument(
        "--priority",
        type=int,
        default=0,
        metavar="N",
        help="-1000 to 1000, claimed highest first (default 0)",
    )
    start.add_argument("--wait", action="store_true", help="wait until the run ends and print it")
    start.add_argument(
        "--timeout", type=_duration, default=None, metavar="DURATION",
        help="with --wait: how long to wait, e.g. 30s, 5m (default: 30s); exit 1 when it is still running",
    )  # fmt: skip
    _add_retry_parser(add)


def cmd_start(opts: Options) -> int:
    args = opts.args
    payload = _json_arg(args.input, "--input")
    with _client(opts) as client:
        run = client.start_workflow(
            args.workflow, payload, resource_id=args.resource, idempotency_key=args.idempotency_key,
            concurrency_key=args.concurrency_key, priority=args.priority,
        )  # fmt: skip
        if args.wait:
            run = client.wait_for_run(run.id, timeout=args.timeout or "30s", resource_id=args.resource)
    if opts.json:
        print_json(run_to_json(run))
    else:
        print(summary(run, "started"))
    if args.wait:
        return 0 if run.status == RunStatus.COMPLETED else 1
    return 0 if run.status not in TERMINAL or run.status == RunStatus.COMPLETED else 1


# --- pgflow retry --------------------------------------------------------------------------------------


def _add_retry_parser(add: AddParser) -> None:
    retry = add(
        "retry",
        "re-drive a failed or cancelled run: completed steps are replayed, failed ones execute again",
        "Make a failed or cancelled run pending again (a worker picks it up): its completed steps are "
        "replayed, not executed again; its failed steps, and the waits a cancel cut short, start afresh, "
        "and its retries and workflow timeout start over. With --from-step, that step and every step "
        "after it execute again too.",
    )
    retry.add_argument("run_id", metavar="RUN_ID")
    retry.add_argument(
        "--from-step",
        metavar="STEP_ID",
        help="also execute this step and every later one again (it must have a record in the run)",
    )


def cmd_retry(opts: Options) -> int:
    args = opts.args
    with _client(opts) as client:
        run = client.retry_workflow(args.run_id, from_step=args.from_step)
    if opts.json:
        print_json(run_to_json(run))
    else:
        done = "Retried" if args.from_step is None else f"Retried from step {args.from_step!r}"
        print(summary(run, done))
    return 0


COMMANDS: dict[str, Callable[[Options], int]] = {"start": cmd_start, "retry": cmd_retry}
