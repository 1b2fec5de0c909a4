"""Smoke test of ``benchmarks/harness.py``: it runs end to end at tiny sizes (no timing assertions)."""

from __future__ import annotations

from types import ModuleType

import pytest

from benchmark_support import load_benchmark


def load() -> ModuleType:
    return load_benchmark("harness")


def test_harness_benchmark_runs_at_tiny_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark completes its runs, replays each history and prints its table."""
    result = load().main(["--runs", "3", "--steps", "2", "--lengths", "1,5", "--repeat", "1"])
    assert result["throughput"]["steps"] == 6
    assert [r["length"] for r in result["replay"]] == [1, 5]
    out = capsys.readouterr().out
    assert "steps/s" in out and "µs/step" in out
