"""Every fenced ```python block in docs/*.md and README.md runs, so the documentation cannot rot.

Blocks of one file run in order, in one namespace (a fresh module). A block preceded by the HTML
comment ``<!-- needs-postgres -->`` needs a database: it runs only in the ``postgres`` pass, with
``PGFLOW_DATABASE_URL`` pointing at the test database and every schema redirected to a fresh one.
A block preceded by ``<!-- no-run -->`` is never run (shell sessions, deliberately partial code).
Other fences (bash, sql, text) are not executed.
"""

from __future__ import annotations

import linecache
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import attrs
import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
PAGES = [
    "index.md", "quickstart.md", "concepts.md", "steps.md", "events-and-timers.md",
    "client-and-workers.md", "testing.md", "configuration.md", "operations.md",
    "migrating-from-pg-workflows.md", "api.md", "errors.md", "architecture.md", "dashboard.md",
    "evolution.md", "typing.md", "asyncio.md", "observability.md", "schedules.md",
]  # fmt: skip

NEEDS_POSTGRES = "<!-- needs-postgres -->"
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@attrs.frozen
class Block:
    """One fenced code block: its language, source, first line number and marker."""

    path: Path
    lang: str
    source: str
    line: int
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the marker comment right before each."""
    lines = path.read_text("utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        prev = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        marker = prev if prev in (NEEDS_POSTGRES, NO_RUN) else None
        blocks.append(Block(path, lang.lower(), "\n".join(body) + "\n", i + 2, marker))
        i = j + 1
    return blocks


def python_blocks(path: Path) -> list[Block]:
    return [b for b in parse_blocks(path) if b.lang in ("python", "py", "python3")]


def _has_postgres_blocks(path: Path) -> bool:
    return any(b.marker == NEEDS_POSTGRES for b in python_blocks(path))


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def run_blocks(path: Path, *, with_postgres: bool) -> int:
    """Run the file's python blocks in order in one fresh module; returns how many ran."""
    name = "docs_" + re.sub(r"\W", "_", path.stem)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    ran = 0
    try:
        for block in python_blocks(path):
            if block.marker == NO_RUN or (block.marker == NEEDS_POSTGRES and not with_postgres):
                continue
            filename = f"<{block.name}>"
            # Registered in linecache so inspect.getsource works (the static step list of a
            # workflow is read from its source) and tracebacks show the documentation's lines.
            padded = "\n" * (block.line - 1) + block.source
            linecache.cache[filename] = (len(padded), None, padded.splitlines(True), filename)
            exec(compile(padded, filename, "exec"), module.__dict__)
            ran += 1
    finally:
        sys.modules.pop(name, None)
        if "opentelemetry.sdk" in sys.modules:  # a page set global providers (observability.md)
            from otel_support import reset_globals

            reset_globals()
    return ran


# -- structure -----------------------------------------------------------------------------------


def test_every_page_exists() -> None:
    """Each documentation page of the table of contents exists."""
    missing = [p for p in PAGES if not (DOCS / p).is_file()]
    assert not missing


def test_readme_links_every_page() -> None:
    """README.md links every docs page."""
    readme = (ROOT / "README.md").read_text("utf-8")
    assert [p for p in PAGES if f"(docs/{p})" not in readme] == []


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub generates for a Markdown file."""
    found: set[str] = set()
    in_fence = False
    for line in path.read_text("utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link points at a file that exists, and at a heading that exists."""
    text = path.read_text("utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part) if file_part else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_api_reference_covers_every_export() -> None:
    """docs/api.md documents every name in ``pgflow.__all__`` and ``pgflow.testing.__all__``."""
    import pgflow
    import pgflow.testing

    text = (DOCS / "api.md").read_text("utf-8")
    names = [*pgflow.__all__, *pgflow.testing.__all__]
    assert [n for n in names if not re.search(rf"`{re.escape(n)}[`(\[]", text)] == []


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_python_blocks_compile(path: Path) -> None:
    """Every python block that is meant to run is valid Python."""
    for block in python_blocks(path):
        if block.marker != NO_RUN:
            compile(block.source, block.name, "exec")


def test_markers_sit_before_python_blocks() -> None:
    """A marker comment is always followed by a python block (a typo would silently run it)."""
    for path in DOC_FILES:
        lines = path.read_text("utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() in (NEEDS_POSTGRES, NO_RUN):
                following = next((ln for ln in lines[i + 1 :] if ln.strip()), "")
                assert following.strip().startswith("```python"), f"{path.name}:{i + 1}"


# -- running -------------------------------------------------------------------------------------


@pytest.fixture
def no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if an unmarked block tries to open a database (it needs the marker)."""
    import pgflow.backend

    def refuse(self: object) -> None:
        raise AssertionError(f"this block opens a database: mark it with {NEEDS_POSTGRES}")

    monkeypatch.setattr(pgflow.backend.Backend, "store", refuse)
    for var in ("PGFLOW_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("path", DOC_FILES, ids=_ids(DOC_FILES))
def test_docs_run_on_the_harness(path: Path, no_database: None) -> None:
    """The file's unmarked python blocks run, in order, without a database."""
    run_blocks(path, with_postgres=False)


@pytest.fixture
def docs_database(pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """PGFLOW_DATABASE_URL (and PGFLOW_TEST_DSN) = the test database; schema ``pgflow`` → a fresh
    schema, any other schema ``s`` → ``<fresh>_s``; all of them dropped afterwards."""
    import pgflow.postgres
    import pgflow.postgres.async_store

    original = pgflow.postgres.PostgresStore
    original_async = pgflow.postgres.async_store.AsyncPostgresStore

    def redirect(schema: str) -> str:
        return pg_schema if schema == "pgflow" else f"{pg_schema}_{schema}"[:63]

    class RedirectedStore(original):  # type: ignore[misc, valid-type]
        def __init__(self, pool: object, schema: str = "pgflow", *args: object, **kwargs: object) -> None:
            super().__init__(pool, redirect(schema), *args, **kwargs)

    class RedirectedAsyncStore(original_async):  # type: ignore[misc, valid-type]
        def __init__(self, pool: object, schema: str = "pgflow", *args: object, **kwargs: object) -> None:
            super().__init__(pool, redirect(schema), *args, **kwargs)

    monkeypatch.setattr(pgflow.postgres, "PostgresStore", RedirectedStore)
    monkeypatch.setattr(pgflow.postgres.async_store, "AsyncPostgresStore", RedirectedAsyncStore)
    monkeypatch.setenv("PGFLOW_DATABASE_URL", pg_dsn)
    monkeypatch.setenv("PGFLOW_TEST_DSN", pg_dsn)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    yield
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (pg_schema + "\\_%",)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


POSTGRES_FILES = [p for p in DOC_FILES if _has_postgres_blocks(p)]


@pytest.mark.postgres
@pytest.mark.parametrize("path", POSTGRES_FILES, ids=_ids(POSTGRES_FILES))
def test_docs_run_on_postgres(path: Path, docs_database: None) -> None:
    """All the file's python blocks run, in order, against a real PostgreSQL."""
    assert run_blocks(path, with_postgres=True) > 0


def test_docs_install_the_right_distribution() -> None:
    """The docs and README never tell users to install `pgflow` (another project's PyPI name): the
    distribution is pgflow-engine (SPEC §18)."""
    wrong = re.compile(r"pip install\s+(-U\s+)?['\"]?pgflow(\[|['\"\s]|$)")
    found = [
        f"{path.name}:{n}"
        for path in DOC_FILES
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if wrong.search(line)
    ]
    assert found == []
