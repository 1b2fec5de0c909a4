"""What the blocking and the asyncio Postgres stores share besides their operations (``ops.py``):
the schema's queries and channels, how a LISTEN connection is opened, how the database is named in
log lines, and which statement records a worker's batch."""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgflow.records import StepRecord
from pgflow.store import Batch, CompleteRun, KeepRunning

from .listen import channel
from .queries import Queries
from .uow import Channels

__all__ = ["CommitRoute", "StoreSettings", "commit_route"]

CommitRoute = Literal["hot", "complete", "locked"]


class StoreSettings:
    """A store's schema, queries, channels and connection settings (its pool's, or ``listen_dsn``)."""

    def __init__(self, pool: Any, schema: str, listen_dsn: str | None, prepare: bool) -> None:
        self.schema = schema
        self.queries = Queries(schema)
        self.channels = Channels(channel("wake", schema), channel("runs", schema))
        self.listen_dsn = listen_dsn
        self.prepare = prepare
        self._pool = pool

    def listen_target(self) -> tuple[str, dict[str, Any]]:
        """Where a LISTEN connection goes (not from the pool): to ``listen_dsn`` when given (a direct
        connection past a transaction-pooling PgBouncer), else like the pool's connections."""
        given: dict[str, Any] | None = {}
        if self.listen_dsn is not None:
            conninfo = self.listen_dsn
        else:
            conninfo = _call_or_get(self._pool.conninfo)
            given = _call_or_get(self._pool.kwargs)
        kwargs = {k: v for k, v in (given or {}).items() if k != "autocommit"}
        if not self.prepare:
            kwargs["prepare_threshold"] = None
        return conninfo, {**kwargs, "autocommit": True, "connect_timeout": 10}

    def where(self) -> str:
        """The database and schema, for log lines (no password)."""
        conninfo = self.listen_dsn or _call_or_get(self._pool.conninfo)
        try:
            parts = conninfo_to_dict(conninfo)
        except psycopg.Error:
            parts = {}
        where = f"{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"
        return f"{where} (schema {self.schema!r})"


def _call_or_get(value: Any) -> Any:
    """psycopg_pool exposes ``conninfo``/``kwargs`` as attributes, newer releases as methods."""
    return value() if callable(value) else value


def commit_route(batch: Batch, transaction: tuple[Any, StepRecord] | None) -> CommitRoute:
    """How a batch is recorded: one fenced statement when it keeps the run running (``hot``) or
    completes it (``complete``, which falls back to ``locked`` for a child run or a lost lease), else
    the locked transaction of ``pgflow.locked.commit``."""
    if transaction is not None or batch.children or batch.discards:
        return "locked"
    if isinstance(batch.outcome, KeepRunning):
        return "hot"
    if isinstance(batch.outcome, CompleteRun):
        return "complete"
    return "locked"
