"""The Postgres store's SQL: named, commented queries loaded once from ``sql/queries.sql``.

A block starts with ``-- name: NAME`` followed by comment lines describing it. ``{schema}`` (and any
other ``{placeholder}``) is filled with :mod:`psycopg.sql` composition, never string formatting.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs
from psycopg import sql

__all__ = ["Queries", "Query", "load_queries", "parse_queries"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")
_ALWAYS = sql.SQL("true")
# the fenced lease-check CTE matched, and a held run starts nothing further (transitions.batch_writes)
_IF_LEASED = sql.SQL("EXISTS (SELECT FROM run WHERE NOT run.held OR r.status <> 'running')")
_RENDERED_MAX = 512  # queries with parts kept rendered (Queries.render); more: start again


@attrs.frozen
class Query:
    """One named query: its description (the comment lines) and its SQL template."""

    name: str
    doc: str
    text: str


def parse_queries(source: str) -> dict[str, Query]:
    """Split a ``queries.sql`` text into named queries; comments before the first name are ignored."""
    queries: dict[str, Query] = {}
    for block in re.split(r"(?m)^(?=--\s*name:)", source):
        lines = block.strip().splitlines()
        if not lines or not (match := _NAME.match(lines[0])):
            continue
        doc = [ln.lstrip("-").strip() for ln in _comment_prefix(lines[1:])]
        body = "\n".join(lines[1 + len(doc) :]).strip()
        if not doc or not body:
            raise ValueError(f"query {match.group(1)!r} needs a comment line and a SQL body")
        queries[match.group(1)] = Query(match.group(1), " ".join(doc), body)
    return queries


def _comment_prefix(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if not line.startswith("--"):
            break
        out.append(line)
    return out


@functools.cache
def load_queries() -> dict[str, Query]:
    """The packaged queries (read once per process)."""
    text = resources.files("pgflow.postgres").joinpath("sql/queries.sql").read_text("utf-8")
    return parse_queries(text)


class Queries:
    """The queries bound to one schema, composed once each."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._ident = sql.Identifier(schema)
        self._raw = load_queries()
        self._composed: dict[str, bytes] = {}
        self._rendered: dict[tuple[str, tuple[tuple[str, bytes], ...]], bytes] = {}

    def __getitem__(self, name: str) -> bytes:
        """The query ``name``, composed once and kept as bytes (psycopg would otherwise render the
        ``Composed`` again on every execution)."""
        found = self._composed.get(name)
        if found is None:
            found = self.compose(name).as_bytes(None)
            self._composed[name] = found
        return found

    def render(self, name: str, parts: Mapping[str, sql.Composable]) -> bytes:
        """The query ``name`` with these ``{placeholders}`` filled in, as bytes, kept for the next
        call with the same parts (a claim's limit, a page's filters: a few distinct values each)."""
        key = (name, tuple((k, part.as_bytes(None)) for k, part in sorted(parts.items())))
        found = self._rendered.get(key)
        if found is None:
            if len(self._rendered) >= _RENDERED_MAX:
                self._rendered.clear()
            found = self._rendered[key] = self.compose(name, **parts).as_bytes(None)
        return found

    def compose(self, name: str, **parts: Any) -> sql.Composed:
        """The query ``name`` with ``{schema}`` and the given ``{placeholders}`` (SQL objects) filled in.

        ``{upsert_steps}`` embeds that query (the one copy of the step upsert) guarded by the
        enclosing statement's fenced ``run`` CTE; standalone, its ``{only_if}`` is ``true``.
        ``{insert_run}`` embeds that query (the one copy of the run insert)."""
        text = self._raw[name].text
        fills: dict[str, Any] = {"schema": self._ident, "only_if": _ALWAYS}
        if "{upsert_steps}" in text:
            fills["upsert_steps"] = self.compose("upsert_steps", only_if=_IF_LEASED)
        if "{insert_run}" in text:
            fills["insert_run"] = self.compose("insert_run")
        return sql.SQL(text).format(**{**fills, **parts})
