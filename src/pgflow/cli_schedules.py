"""``pgflow schedules [list|pause|resume|delete] [ID]``: see and steer the cron schedules (SPEC §15,
§16). Like every command but ``migrate`` and ``worker``, it never creates or migrates a schema."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import attrs

from .cli_base import Options, UsageError, _client
from .cli_render import _table, _when, plural, print_json
from .schedules import ScheduleInfo
from .serde import to_json

__all__ = ["COMMANDS", "add_parsers", "schedule_to_json", "schedules_table"]

AddParser = Callable[..., argparse.ArgumentParser]
VERBS = ("list", "pause", "resume", "delete")


def add_parsers(add: AddParser) -> None:
    schedules = add(
        "schedules",
        "list the cron schedules, or pause, resume or delete one",
        "List the cron schedules of the schema (with ID: that one), or pause one (it starts nothing until "
        "resumed), resume one (it continues from its next tick; the ticks of the pause are not caught up) "
        "or delete one (the runs it started stay). Schedules are created by code: Engine(schedules=...) "
        "or create_schedule().",
    )
    schedules.add_argument("verb", nargs="?", choices=VERBS, default="list", help="default: list")
    schedules.add_argument(
        "schedule_id", nargs="?", metavar="ID", help="the schedule (required but for list)"
    )


def schedule_to_json(info: ScheduleInfo) -> dict[str, Any]:
    """A schedule as a JSON object: ``ScheduleInfo``'s fields."""
    return {f.name: to_json(getattr(info, f.name), root=f.name) for f in attrs.fields(ScheduleInfo)}


def schedules_table(items: list[ScheduleInfo]) -> list[str]:
    headers = (
        "ID",
        "WORKFLOW",
        "CRON",
        "TIMEZONE",
        "CATCH-UP",
        "STATE",
        "NEXT TICK (UTC)",
        "LAST TICK",
        "LAST RUN",
    )
    rows = [
        (s.schedule_id, s.workflow_id, s.cron, s.timezone, s.catch_up, "paused" if s.paused else "active",
         _when(s.next_tick_at), _when(s.last_tick_at), s.last_run_id or "-")
        for s in items
    ]  # fmt: skip
    return _table(headers, rows)


def cmd_schedules(opts: Options) -> int:
    verb, sid = opts.args.verb, opts.args.schedule_id
    if verb != "list" and sid is None:
        raise UsageError(f"`pgflow schedules {verb}` needs the ID of a schedule")
    with _client(opts) as client:
        if verb == "list":
            items = client.list_schedules() if sid is None else [client.get_schedule(sid)]
        elif verb == "delete":
            client.delete_schedule(sid)
            if opts.json:
                print_json({"deleted": sid})
            else:
                print(f"Deleted schedule {sid!r} (the runs it started stay)")
            return 0
        else:
            items = [client.pause_schedule(sid) if verb == "pause" else client.resume_schedule(sid)]
    if opts.json:
        print_json(
            [schedule_to_json(s) for s in items]
            if verb == "list" and sid is None
            else schedule_to_json(items[0])
        )
    elif verb != "list":
        state = (
            "paused: it starts nothing until resumed"
            if verb == "pause"
            else f"active: next tick {_when(items[0].next_tick_at)} UTC"
        )
        print(f"Schedule {sid!r} is {state}")
    elif not items:
        print("No schedules yet: Engine(schedules=[...]) or create_schedule() creates them.")
    else:
        for line in schedules_table(items):
            print(line)
        if sid is None:
            print(f"\n{plural(len(items), 'schedule')}")
    return 0


COMMANDS: dict[str, Callable[[Options], int]] = {"schedules": cmd_schedules}
