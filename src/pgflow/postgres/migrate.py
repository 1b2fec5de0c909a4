"""Schema migrations: versioned SQL files applied once, safely, however many processes start at once.

Everything happens in ONE transaction under ``pg_advisory_xact_lock`` (a key derived from the schema
name): create the schema, create ``schema_version``, re-read the version *after* taking the lock,
apply the missing files in order. A quick unlocked check makes an up-to-date database cheap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
from collections.abc import Generator
from importlib import resources
from typing import Any

import attrs
import pendulum
import psycopg
from psycopg import sql

from .sqlgen import Raw

__all__ = [
    "Migration",
    "applied_version",
    "applied_versions",
    "apply_missing",
    "current_versions",
    "latest_version",
    "load_migrations",
    "lock_key",
    "migrate",
    "missing",
    "missing_versions",
]  # fmt: skip

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@attrs.frozen
class Migration:
    version: int
    name: str
    text: str


@functools.cache
def load_migrations() -> tuple[Migration, ...]:
    """The packaged migration files, ordered by version."""
    found = []
    for entry in resources.files("pgflow.postgres").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


def latest_version() -> int:
    migrations = load_migrations()
    return migrations[-1].version if migrations else 0


def lock_key(schema: str) -> int:
    """A signed 64-bit advisory lock key for migrating ``schema``."""
    digest = hashlib.sha256(f"pgflow.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def applied_versions(conn: psycopg.Connection[Any], schema: str) -> set[int]:
    """The versions applied to the schema (none when it has no ``schema_version`` table yet)."""
    table = f"{sql.Identifier(schema).as_string(conn)}.schema_version"
    row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    if row is None or row[0] is None:
        return set()
    query = sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(schema))
    return {int(r[0]) for r in conn.execute(query).fetchall()}


def applied_version(conn: psycopg.Connection[Any], schema: str) -> int:
    """The schema's highest applied version (0 when it has no ``schema_version`` table yet)."""
    return max(applied_versions(conn, schema), default=0)


def missing_versions(applied: set[int]) -> list[int]:
    """The packaged versions not in ``applied``, in order. Every missing file is applied, not only
    those above the highest applied one: a version numbered below one already applied (two branches
    of development merged in another order) is not skipped."""
    return [m.version for m in load_migrations() if m.version not in applied]


def migrate(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    """Bring ``schema`` up to date on ``conn`` (idle, not inside a transaction); returns versions applied."""
    with contextlib.nullcontext() if conn.autocommit else conn.transaction():
        if not missing_versions(applied_versions(conn, schema)):
            return []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
        ident = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_version"
                " (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
            ).format(ident)
        )
        done = applied_versions(conn, schema)
        applied = []
        for migration in load_migrations():
            if migration.version not in done:
                _apply(conn, ident, migration)
                applied.append(migration.version)
        return applied


def _apply(conn: psycopg.Connection[Any], ident: sql.Identifier, migration: Migration) -> None:
    conn.execute(sql.SQL(migration.text).format(schema=ident))
    conn.execute(
        sql.SQL("INSERT INTO {}.schema_version (version, name, applied_at) VALUES (%s, %s, %s)").format(
            ident
        ),
        (migration.version, migration.name, pendulum.now("UTC")),
    )


# -- the same, as SQL effects for the stores' executors (blocking or asyncio) -------------------------


def current_versions(schema: str) -> Generator[Raw, Any, set[int]]:
    """The versions applied to the schema (none when it has no ``schema_version`` table yet)."""
    table = sql.SQL("{}.schema_version").format(sql.Identifier(schema))
    found = yield Raw(sql.SQL("SELECT to_regclass({}) AS t").format(sql.Literal(table.as_string(None))))
    if not found or found[0]["t"] is None:
        return set()
    rows = yield Raw(sql.SQL("SELECT version AS v FROM {}").format(table))
    return {int(r["v"]) for r in rows}


def missing(schema: str) -> Generator[Raw, Any, list[int]]:
    """The packaged versions the schema lacks (see :func:`missing_versions`)."""
    return missing_versions((yield from current_versions(schema)))


def apply_missing(schema: str) -> Generator[Raw, Any, list[int]]:
    """Inside one transaction (the executor's): take the schema's advisory lock, create the schema
    and ``schema_version``, re-read the version and apply the missing files in order."""
    ident = sql.Identifier(schema)
    yield Raw(sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(lock_key(schema))))
    yield Raw(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
    yield Raw(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.schema_version"
        " (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
    ).format(ident))  # fmt: skip
    done = yield from current_versions(schema)
    applied = []
    for migration in load_migrations():
        if migration.version not in done:
            yield Raw(sql.SQL(migration.text).format(schema=ident))
            yield Raw(
                sql.SQL(
                    "INSERT INTO {}.schema_version (version, name, applied_at) VALUES (%s, %s, %s)"
                ).format(ident),
                (migration.version, migration.name, pendulum.now("UTC")),
            )
            applied.append(migration.version)
    return applied
