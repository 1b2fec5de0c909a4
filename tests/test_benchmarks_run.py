"""Smoke test of ``benchmarks/harness.py``: it runs end to end at tiny sizes (no timing assertions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "harness.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgflow_benchmark_harness", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_harness_benchmark_runs_at_tiny_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark completes its runs, replays each history and prints its table."""
    result = load().main(["--runs", "3", "--steps", "2", "--lengths", "1,5", "--repeat", "1"])
    assert result["throughput"]["steps"] == 6
    assert [r["length"] for r in result["replay"]] == [1, 5]
    out = capsys.readouterr().out
    assert "steps/s" in out and "µs/step" in out
