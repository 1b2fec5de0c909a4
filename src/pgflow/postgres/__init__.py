"""The PostgreSQL adapter: :class:`PostgresStore`, its named SQL queries and its migrations."""

from __future__ import annotations

from .store import PostgresStore

__all__ = ["PostgresStore"]
