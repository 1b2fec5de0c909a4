"""Keyset pagination of runs for the Postgres store: the rule of ``memory.keyset_page`` in SQL.

Newest first by ``(created_at, id)`` (ids compare bytewise, as in Python), so pages never skip or
repeat a run; ``ending_before`` walks back and reproduces the forward pages exactly.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgflow.errors import InvalidArgumentError
from pgflow.memory import unknown_cursor
from pgflow.store import RunQuery, RunRow

from .queries import Queries
from .rows import run_from

__all__ = ["list_runs"]

Conn = psycopg.Connection[Any]

_FILTERS = {
    "resource_id": sql.SQL("resource_id = %(resource_id)s"),
    "workflow_id": sql.SQL("workflow_id = %(workflow_id)s"),
    "statuses": sql.SQL("status = ANY(%(statuses)s)"),
}
_OLDER = sql.SQL("(created_at, id) < (%(cursor_at)s, %(cursor_id)s)")
_NEWER = sql.SQL("(created_at, id) > (%(cursor_at)s, %(cursor_id)s)")


def list_runs(conn: Conn, q: Queries, query: RunQuery) -> tuple[list[RunRow], bool, bool]:
    """Keyset pages newest first by (created_at, id): the rule of ``memory.keyset_page``."""
    params: dict[str, Any] = {
        "resource_id": query.resource_id, "workflow_id": query.workflow_id,
        "statuses": list(query.statuses) if query.statuses is not None else None, "limit": query.limit + 1,
    }  # fmt: skip
    filters = [sql.SQL("TRUE")] + [part for key, part in _FILTERS.items() if params[key] is not None]
    cursor_id = query.starting_after or query.ending_before
    name = "list_runs_desc"
    if cursor_id is not None:
        found = conn.execute(q["cursor_run"], {"id": cursor_id, "resource_id": query.resource_id}).fetchone()
        if found is None:
            raise InvalidArgumentError(unknown_cursor(cursor_id))
        params["cursor_at"], params["cursor_id"] = found
        filters.append(_OLDER if query.starting_after else _NEWER)
        name = "list_runs_desc" if query.starting_after else "list_runs_asc"
    statement = q.compose(name, filters=sql.SQL(" AND ").join(filters))
    rows = [run_from(r) for r in conn.cursor(row_factory=dict_row).execute(statement, params).fetchall()]
    more = len(rows) > query.limit
    page = rows[: query.limit]
    if name == "list_runs_asc":
        return page[::-1], True, more
    return page, more, cursor_id is not None
