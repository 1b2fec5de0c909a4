"""Typed steps (SPEC §17): what mypy --strict and pyright strict say about code using pgflow.

The positive cases are ``assert_type`` calls in ``tests/typing/`` (checked by ``.ci/run``); here
the checkers run on ``tests/typing_errors/mistakes.py``, which must give an error on exactly the
lines marked ``# error`` and reveal the types of the lines marked ``# reveal: T``, and mypy --strict
runs on the python blocks of the documentation (one module per page, the blocks in order, at their
line numbers in the page).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_docs import DOC_FILES, NO_RUN, python_blocks

pytestmark = pytest.mark.slow  # each runs a type checker: a few seconds, more on a cold cache

ROOT = Path(__file__).resolve().parent.parent
MISTAKES = ROOT / "tests" / "typing_errors" / "mistakes.py"
PREFIX = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")  # module prefixes: pgflow.commands.PollResult


def _marked(marker: str) -> dict[int, str]:
    """Line number -> what follows ``# <marker>`` on that line of the mistakes file."""
    found: dict[int, str] = {}
    for number, line in enumerate(MISTAKES.read_text("utf-8").splitlines(), 1):
        if (match := re.search(rf"  # {marker}:?([^`]*)$", line)) is not None:
            found[number] = match.group(1).strip()
    return found


def _mypy(*paths: Path) -> list[tuple[str, int, str, str]]:
    """(file, line, severity, message) of each diagnostic of ``mypy --strict`` on ``paths``."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-pretty", "--show-error-codes",
         "--config-file", str(ROOT / "pyproject.toml"), *map(str, paths)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    found = []
    for line in proc.stdout.splitlines():
        match = re.match(r"^(.+?):(\d+): (error|note): (.*)$", line)
        if match:
            found.append((match.group(1), int(match.group(2)), match.group(3), match.group(4)))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return found


def test_mypy_finds_the_mistakes_and_reveals_the_step_types() -> None:
    """mypy --strict: an error on each ``# error`` line and nowhere else; the revealed types."""
    found = _mypy(MISTAKES)
    errors = {line for _, line, severity, _ in found if severity == "error"}
    assert errors == set(_marked("error")), "\n".join(map(str, found))
    revealed = {
        line: PREFIX.sub("", m.group(1))
        for _, line, severity, text in found
        if severity == "note" and (m := re.match(r'Revealed type is "(.*)"', text))
    }
    assert revealed == _marked("reveal")


def _pyright() -> str:
    found = Path(sys.executable).with_name("pyright")
    if found.exists():
        return str(found)
    on_path = shutil.which("pyright")
    if on_path is None:
        pytest.skip("pyright is not installed (the dev extra installs it)")
    return on_path


def test_pyright_finds_the_mistakes_and_reveals_the_step_types() -> None:
    """pyright strict: an error on each ``# error`` line and nowhere else; the revealed types."""
    proc = subprocess.run(
        [_pyright(), "--outputjson", str(MISTAKES)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = json.loads(proc.stdout)
    diagnostics = report["generalDiagnostics"]
    errors = {d["range"]["start"]["line"] + 1 for d in diagnostics if d["severity"] == "error"}
    assert errors == set(_marked("error")), json.dumps(diagnostics, indent=1)
    revealed = {
        d["range"]["start"]["line"] + 1: PREFIX.sub("", m.group(1))
        for d in diagnostics
        if d["severity"] == "information" and (m := re.match(r'Type of ".*" is "(.*)"$', d["message"]))
    }
    assert revealed == _marked("reveal")


def _docs_module(path: Path) -> str:
    """The python blocks of a page (but ``no-run`` ones) as one module, each at its line in the page."""
    lines = [""] * len(path.read_text("utf-8").splitlines())
    for block in python_blocks(path):
        if block.marker == NO_RUN:
            continue
        for offset, text in enumerate(block.source.splitlines()):
            lines[block.line - 1 + offset] = text
    return "\n".join(lines) + "\n"


def test_documentation_examples_type_check(tmp_path: Path) -> None:
    """mypy --strict passes on the python blocks of every page of docs/ and of README.md."""
    modules = {}
    for path in DOC_FILES:
        if any(b.marker != NO_RUN for b in python_blocks(path)):
            module = tmp_path / ("docs_" + re.sub(r"\W", "_", path.stem) + ".py")
            module.write_text(_docs_module(path), "utf-8")
            modules[module.name] = path.relative_to(ROOT)
    found = _mypy(*(tmp_path / name for name in modules))
    problems = [
        f"{modules[Path(file).name]}:{line}: {text}"
        for file, line, severity, text in found
        if severity == "error"
    ]
    assert problems == []
