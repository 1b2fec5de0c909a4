"""The layering of docs/architecture.md: imports point down, psycopg stays in the adapter and edges."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pgflow"

LAYERS = {
    "values": {"errors", "arguments", "durations", "clock", "commands", "records", "logs"},
    "core": {
        "serde",
        "validation",
        "definition",
        "static_steps",
        "static_checks",
        "step_records",
        "cron",
        "history",
        "replay",
    },
    "port": {
        "store",
        "transitions",
        "run_rules",
        "limits",
        "locked",
        "memory",
        "schedules",
        "schedule_store",
    },
    "adapters": {"postgres"},
    "runtime": {
        "protocol",
        "processor",
        "checking",
        "execution",
        "threads",
        "worker",
        "operations",
        "async_operations",
        "retention",
        "async_processor",
        "async_worker",
        "engine",
        "async_engine",
        "client",
        "telemetry",
    },
    "edges": {
        "testing",
        "cli",
        "cli_base",
        "cli_code",
        "cli_ops",
        "cli_render",
        "cli_schedules",
        "demo",
        "backend",
        "__init__",
        "__main__",
        "dashboard",
    },
}
ORDER = list(LAYERS)
# Documented sideways arrows: Engine/Client ask backend.py for their store (configuration).
ALLOWED = {("engine", "backend"), ("client", "backend"), ("async_engine", "backend")}
PSYCOPG_OK = {"postgres", "backend", "testing", "cli", "cli_base", "demo"}
OTEL_OK = {"telemetry"}  # the otel extra: imported lazily, by pgflow.telemetry alone


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _layer(unit: str) -> str:
    for name, units in LAYERS.items():
        if unit in units:
            return name
    raise AssertionError(f"module {unit!r} is in no layer: add it to LAYERS and docs/architecture.md")


def _imports(path: Path) -> set[str]:
    """Top-level pgflow units and third-party roots imported by ``path`` (relative or absolute)."""
    found: set[str] = set()
    # sub-packages: relative imports stay inside
    inside_package = _unit(path) in {"postgres", "dashboard", "testing", "telemetry"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0:
                parts = module.split(".")
                found.add(parts[1] if parts[0] == "pgflow" and len(parts) > 1 else parts[0])
            elif node.level == 1 and inside_package:
                continue  # within the package
            else:
                target = module.split(".")[0] if module else ""
                found.update([target] if target else [a.name for a in node.names])
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    """A module imports pgflow modules of its own layer or below, never above."""
    unit = _unit(path)
    rank = ORDER.index(_layer(unit))
    units = {u for units in LAYERS.values() for u in units}
    for target in _imports(path) & units:
        if target == unit or (unit, target) in ALLOWED:
            continue
        assert ORDER.index(_layer(target)) <= rank, (
            f"{unit} ({_layer(unit)}) imports {target} ({_layer(target)})"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_psycopg_stays_in_the_adapter_and_edges(path: Path) -> None:
    """values, core, port and runtime never import psycopg: they reach the database through a Store."""
    if _unit(path) not in PSYCOPG_OK:
        assert not {"psycopg", "psycopg_pool"} & _imports(path), f"{path.name} imports psycopg"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_opentelemetry_stays_in_the_telemetry_package(path: Path) -> None:
    """Only pgflow.telemetry imports opentelemetry (so nothing else needs the otel extra)."""
    if _unit(path) not in OTEL_OK:
        assert "opentelemetry" not in _imports(path), f"{path.name} imports opentelemetry"
