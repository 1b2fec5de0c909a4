"""Workflows and helpers shared by the dashboard tests (HTTP level and in the browser)."""

from __future__ import annotations

import re
from typing import Any

import pgflow
from pgflow import Child, Delay, Pause, Run, WaitFor, workflow

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add(a: int, b: int) -> int:
    return a + b


def explode(reason: str) -> None:
    raise ValueError(f"exploded: {reason}")


@workflow("greet")
def greet(ctx: pgflow.Context[Any]) -> Any:
    total = yield Run("add", add, 1, 2)
    answer = yield WaitFor("approval", event="approved", timeout="1h")
    yield Run("finish", add, total, 1)
    return {"total": total, "answer": answer}


@workflow("explode")
def explode_flow(ctx: pgflow.Context[Any]) -> Any:
    yield Run("prepare", add, 1, 1)
    yield Run("blow-up", explode, "on purpose")


@workflow("nap")
def nap(ctx: pgflow.Context[Any]) -> Any:
    yield Delay("sleep", "1h")
    return "rested"


@workflow("hold")
def hold(ctx: pgflow.Context[Any]) -> Any:
    yield Pause("wait-for-human")
    return "released"


@workflow("parent")
def parent(ctx: pgflow.Context[Any]) -> Any:
    child = yield Child("spawn", nap)
    return child


FLOWS = (greet, explode_flow, nap, hold, parent)


def csrf_token(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)
