"""Small helpers shared by the end-to-end tests (real Postgres, real engines)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def execute(dsn: str, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """One statement on a fresh autocommit connection; its rows (or [])."""
    with connect(dsn) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; its value, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def stays(check: Callable[[], Any], duration: float, interval: float = 0.05) -> None:
    """Assert ``check`` stays truthy for ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert check(), "condition stopped holding"
        time.sleep(interval)


@contextmanager
def extra_schemas(dsn: str) -> Iterator[list[str]]:
    """A list to append schema names to; every one is dropped on exit."""
    names: list[str] = []
    try:
        yield names
    finally:
        with connect(dsn) as conn:
            for name in names:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
