"""``pgflow start``: start a run of a registered workflow from the command line (SPEC §15), and wait
for it with ``--wait``."""

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
    start.add_argument("--wait", action="store_true", help="wait until the run ends and print it")
    start.add_argument(
        "--timeout", type=_duration, default=None, metavar="DURATION",
        help="with --wait: how long to wait, e.g. 30s, 5m (default: 30s); exit 1 when it is still running",
    )  # fmt: skip


def cmd_start(opts: Options) -> int:
    args = opts.args
    payload = _json_arg(args.input, "--input")
    with _client(opts) as client:
        run = client.start_workflow(
            args.workflow, payload, resource_id=args.resource, idempotency_key=args.idempotency_key
        )
        if args.wait:
            run = client.wait_for_run(run.id, timeout=args.timeout or "30s", resource_id=args.resource)
    if opts.json:
        print_json(run_to_json(run))
    else:
        print(summary(run, "started"))
    if args.wait:
        return 0 if run.status == RunStatus.COMPLETED else 1
    return 0 if run.status not in TERMINAL or run.status == RunStatus.COMPLETED else 1


COMMANDS: dict[str, Callable[[Options], int]] = {"start": cmd_start}
