"""What the ``pgflow`` commands share: parsed options, finding the database, clients, importing the
user's module, the read-only guard, and one-line errors."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
import types
from typing import TYPE_CHECKING, Any

import attrs

from .cli_render import one_line
from .definition import Workflow
from .durations import parse_duration
from .errors import PgflowError
from .records import RunStatus
from .schedules import Schedule

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "PROG",
    "STATUSES",
    "Options",
    "UsageError",
    "_client",
    "_database",
    "_duration",
    "_error",
    "_exception_line",
    "_import_target",
    "_json_arg",
    "_module_schedules",
    "_module_workflows",
    "_options",
    "_positive_int",
    "_require_pgflow_tables",
    "_where",
]

PROG = "pgflow"
STATUSES = [s.value for s in RunStatus]


class UsageError(Exception):
    """A bad argument discovered after parsing (exit status 2)."""


def _duration(text: str) -> Any:
    try:
        return parse_duration(text)
    except PgflowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@attrs.frozen
class Options:
    command: str
    dsn: str | None
    schema: str
    json: bool
    schema_given: bool
    args: argparse.Namespace


def _options(ns: argparse.Namespace) -> Options:
    return Options(
        command=ns.command,
        dsn=getattr(ns, "dsn", None) or None,
        schema=getattr(ns, "schema", "pgflow"),
        json=bool(getattr(ns, "json", False)),
        schema_given=hasattr(ns, "schema"),
        args=ns,
    )


def _json_arg(text: str | None, flag: str = "--data") -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag} is not valid JSON ({exc}): {text!r}") from None


def _where(dsn: str) -> str:
    """The database a DSN names, without its password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:
        return "the configured database"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


def _database(opts: Options, *, existing: bool = False) -> str:
    """Resolve the DSN (--dsn, the environment, else the embedded default, whose data directory is
    said on stderr) and fail fast, in one line, when the database cannot be reached (instead of
    waiting on a connection pool). ``existing``: never create an embedded database for it."""
    import psycopg

    from .backend import configured_dsn, embedded_data_dir, resolve_dsn

    if configured_dsn(opts.dsn) is None:
        data_dir = embedded_data_dir()
        if existing and not data_dir.exists():
            raise PgflowError(
                f"no pgflow database here: the embedded default lives in {data_dir} (absent). Run this "
                "command where you ran `pgflow demo` or your engine, or pass --dsn / set PGFLOW_DATABASE_URL"
            )
        print(f"{PROG}: using the embedded PostgreSQL in {data_dir}", file=sys.stderr)
    dsn = resolve_dsn(opts.dsn)
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True):
            pass
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PgflowError(f"cannot connect to the database at {_where(dsn)}: {reason}") from None
    return dsn


def _client(opts: Options, *, existing: bool = True) -> Client:
    """A Client for the command. ``existing`` (every command but the ones that set a database up):
    the schema must hold pgflow's tables already — the command never creates or migrates one (a
    typo in --schema is an error naming the nearest pgflow schema, not a new empty schema)."""
    from .client import Client

    dsn = _database(opts, existing=existing)
    if existing:
        _require_pgflow_tables(dsn, opts.schema)
    return Client(dsn, schema=opts.schema)


def _import_target(module_name: str) -> types.ModuleType:
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise PgflowError(
                f"cannot import module {module_name!r}: no such module (looked in {cwd} and sys.path)"
            ) from None
        raise PgflowError(f"importing module {module_name!r} failed: {_exception_line(exc)}") from None
    except Exception as exc:
        raise PgflowError(f"importing module {module_name!r} failed: {_exception_line(exc)}") from None


def _exception_line(exc: BaseException) -> str:
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" ({last.filename}:{last.lineno})"
    elif isinstance(exc, SyntaxError) and exc.filename:
        where = ""  # its message already names the file and line
    return f"{type(exc).__name__}: {exc}{where}"


def _module_workflows(module: types.ModuleType) -> list[Workflow]:
    found: dict[int, Workflow] = {}
    for value in vars(module).values():
        if isinstance(value, Workflow):
            found.setdefault(id(value), value)
    return list(found.values())


def _module_schedules(module: types.ModuleType) -> list[Schedule]:
    """The module-level ``Schedule`` objects (and those in module-level lists or tuples of them)."""
    found: dict[int, Schedule] = {}
    for value in vars(module).values():
        items = value if isinstance(value, list | tuple) else (value,)
        for item in items:
            if isinstance(item, Schedule):
                found.setdefault(id(item), item)
    return list(found.values())


def _require_pgflow_tables(dsn: str, schema: str) -> None:
    """Commands that use an existing schema never create or migrate one: say so when there is nothing
    there (suggesting the nearest schema that has pgflow tables) or the schema is out of date."""
    import difflib

    import psycopg

    from .postgres.migrate import applied_versions, missing_versions

    with psycopg.connect(dsn, autocommit=True) as conn:
        applied = applied_versions(conn, schema)
        lacking = missing_versions(applied)
        if not lacking:
            return
        if applied:
            raise PgflowError(
                f"schema {schema!r} lacks migration(s) {', '.join(map(str, lacking))} of this pgflow: "
                "run `pgflow migrate` first (this command does not migrate)"
            )
        rows = conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'schema_version' AND c.relkind = 'r' AND EXISTS "
            "(SELECT FROM pg_class r WHERE r.relnamespace = n.oid AND r.relname = 'runs') ORDER BY 1"
        ).fetchall()
    found = [r[0] for r in rows]
    nearest = difflib.get_close_matches(schema, found, n=1, cutoff=0.0)
    hint = f"; the nearest pgflow schema is {nearest[0]!r} (--schema {nearest[0]})" if nearest else ""
    raise PgflowError(
        f"schema {schema!r} has no pgflow tables (this command does not create them; `pgflow migrate` "
        f"does){hint}"
    )


def _error(message: str) -> None:
    print(f"{PROG}: error: {one_line(message, 2000)}", file=sys.stderr)
