"""pgflow retention benchmark: ``prune`` of a long history, and how long each batch holds its locks.

    python benchmarks/prune.py [--dsn DSN] [--runs 100000] [--steps 3] [--events 2] [--explain] [--keep]

Fills a fresh schema (bulk SQL) with ``--runs`` terminal runs that ended 38 to 50 days ago —
completed, failed and cancelled, each with ``--steps`` step records and ``--events`` events (one
consumed), every tenth a parent of the next two — plus runs ``prune`` must keep: live runs (pending,
paused), recent ones, and ended children of live parents (5 % of ``--runs`` each). Then it measures,
against that one server:

- the raw INSERT+COMMIT rate of one connection (``benchmarks/engine.py``'s (a)), for scale;
- ``Client.prune(older_than="30d")``: every batch is one store call, one transaction (a single
  statement in autocommit), timed on its own — the longest one bounds how long any row lock of the
  prune is held (target < 1 s) — and the runs deleted per second overall;
- a concurrent writer that keeps updating random runs of the doomed set during the prune (as a
  client retrying or a worker settling a parent would): its longest wait is what the prune's row
  locks cost someone else;
- that exactly the doomed runs went, and every run to keep is still there.

DSN: ``--dsn``, else ``PGFLOW_DATABASE_URL``, else an embedded server in a temp dir (deleted
afterwards). The schemas are dropped at the end unless ``--keep``. After the fill the benchmark runs
``VACUUM ANALYZE``, as autovacuum would on a live table. Durability settings are the server's own.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import psycopg
from psycopg import sql

import pgflow
from pgflow.operations import PRUNE_BATCH
from pgflow.postgres.migrate import migrate
from pgflow.postgres.queries import Queries

TARGET_MS = 1000.0


def _engine_helpers() -> Any:
    """``benchmarks/engine.py`` (its ``database``, ``raw_insert_rate``, …), loaded by path."""
    path = Path(__file__).resolve().with_name("engine.py")
    spec = importlib.util.spec_from_file_location("pgflow_benchmark_engine_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _engine_helpers()

# The doomed runs: i = 1..runs, in groups of ten: i % 10 = 1 a parent, 2 and 3 its children (ended
# a few seconds before it), the rest on their own. Ended 50 days ago onwards, 10 s apart per group.
FILL_RUNS = """
INSERT INTO {schema}.runs (id, workflow_id, resource_id, status, input, output, error, current_step_id,
    created_at, updated_at, completed_at, parent_run_id, parent_step_id)
SELECT md5(%(salt)s || i)::uuid::text,
       CASE WHEN i %% 10 IN (2, 3) THEN 'child' ELSE 'wf-' || (i %% 4) END,
       'customer-' || (i %% 100),
       s.status,
       json_build_object('order_id', i),
       CASE WHEN s.status = 'completed' THEN json_build_object('shipped', true) END,
       CASE WHEN s.status = 'failed' THEN jsonb_build_object('type', 'ValueError', 'message', 'no') END,
       'step-1',
       e.ended - interval '1 minute', e.ended, e.ended,
       CASE WHEN i %% 10 IN (2, 3) THEN md5(%(salt)s || (i - i %% 10 + 1))::uuid::text END,
       CASE WHEN i %% 10 IN (2, 3) THEN 'child-' || (i %% 10) END
FROM generate_series(1, %(runs)s) AS i,
LATERAL (SELECT CASE WHEN i %% 100 < 80 THEN 'completed' WHEN i %% 100 < 92 THEN 'failed'
                     ELSE 'cancelled' END AS status) AS s,
LATERAL (SELECT %(t0)s::timestamptz + (i / 10) * interval '10 seconds'
                + CASE WHEN i %% 10 = 1 THEN interval '9 seconds' ELSE (i %% 10) * interval '1 second' END
         AS ended) AS e
"""

# The runs to keep, i = 1..keep: live ones (pending, paused), recent ones (ended yesterday), and
# ended children (of 45 days ago) of live parents.
FILL_KEPT = """
INSERT INTO {schema}.runs (id, workflow_id, resource_id, status, input, created_at, updated_at,
    completed_at, due_at, waiting_step_id, waiting_kind, waiting_event, parent_run_id, parent_step_id)
SELECT 'keep-' || k.kind || '-' || i, 'wf-kept', NULL, k.status, '{{}}'::json,
       k.at, k.at, CASE WHEN k.status IN ('completed', 'failed', 'cancelled') THEN k.at END,
       CASE WHEN k.kind = 'live' AND i %% 2 = 0 THEN k.at END,
       CASE WHEN k.status = 'paused' THEN 'wait' END, CASE WHEN k.status = 'paused' THEN 'wait_for' END,
       CASE WHEN k.status = 'paused' THEN 'go' END,
       CASE WHEN k.kind = 'kid' THEN 'keep-live-' || i END, CASE WHEN k.kind = 'kid' THEN 'child' END
FROM generate_series(1, %(keep)s) AS i,
LATERAL (VALUES
    ('live', CASE WHEN i %% 2 = 0 THEN 'pending' ELSE 'paused' END, %(t0)s::timestamptz),
    ('recent', 'completed', %(recent)s::timestamptz),
    ('kid', 'completed', %(t0)s::timestamptz + interval '5 days')
) AS k(kind, status, at)
"""

FILL_STEPS = """
INSERT INTO {schema}.steps (run_id, step_id, kind, status, output, attempts, started_at, completed_at, seq)
SELECT r.id, 'step-' || n, 'run', 'completed', json_build_object('n', n), 1,
       r.created_at, r.created_at + n * interval '1 second', n
FROM {schema}.runs AS r, generate_series(1, %(steps)s) AS n
"""

FILL_EVENTS = """
INSERT INTO {schema}.events (run_id, name, data, created_at, consumed_by_step, consumed_at)
SELECT r.id, 'event-' || n, json_build_object('n', n), r.created_at,
       CASE WHEN n = 1 THEN 'step-1' END, CASE WHEN n = 1 THEN r.created_at END
FROM {schema}.runs AS r, generate_series(1, %(events)s) AS n
"""


def fill(dsn: str, schema: str, args: argparse.Namespace, now: pendulum.DateTime) -> dict[str, Any]:
    """Create the schema and fill it; the counts and the seconds it took."""
    start = time.perf_counter()
    ident = sql.Identifier(schema)
    keep = max(1, args.runs // 20)
    params = {
        "salt": schema, "runs": args.runs, "keep": keep, "steps": args.steps, "events": args.events,
        "t0": now.subtract(days=50), "recent": now.subtract(days=1),
    }  # fmt: skip
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, schema)
        with conn.transaction():
            for statement in (FILL_RUNS, FILL_KEPT, FILL_STEPS, FILL_EVENTS):
                conn.execute(sql.SQL(statement).format(schema=ident), params)
        for table in ("runs", "steps", "events"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}.{}").format(ident, sql.Identifier(table)))
        counts = {t: _count(conn, schema, t) for t in ("runs", "steps", "events")}
    return {"seconds": time.perf_counter() - start, "doomed": args.runs, "kept": 3 * keep, **counts}


def _count(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    found = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    )
    row = found.fetchone()
    return int(row[0]) if row else 0


def explain(dsn: str, schema: str, cutoff: pendulum.DateTime) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one batch, rolled back."""
    statement = Queries(schema).compose("prune_runs")
    params = {"statuses": ["completed", "failed", "cancelled"], "cutoff": cutoff, "workflow_id": None,
              "resource_id": None, "limit": PRUNE_BATCH, "lock_key": None}  # fmt: skip
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + statement, params).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


class Prober:
    """A writer that updates random doomed runs while the prune runs, each its own transaction:
    the longest of its statements is the longest a prune batch made someone else wait."""

    def __init__(self, dsn: str, schema: str, ids: list[str]) -> None:
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._update = sql.SQL("UPDATE {}.runs SET updated_at = updated_at WHERE id = %s").format(
            sql.Identifier(schema)
        )
        self._ids = ids
        self._thread = threading.Thread(target=self._loop, name="prune-prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _loop(self) -> None:
        pick = random.Random(7)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            self._conn.execute(self._update, (pick.choice(self._ids),))
            self.latencies.append(time.perf_counter() - t0)
            time.sleep(0.002)


def doomed_ids(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id FROM {}.runs WHERE id NOT LIKE 'keep-%'").format(sql.Identifier(schema))
        ).fetchall()
    return [r[0] for r in rows]


def measure_prune(dsn: str, schema: str, ids: list[str]) -> dict[str, Any]:
    """``Client.prune(older_than="30d")``, every batch (store call) timed; a prober writing beside it."""
    batches: list[tuple[float, int | None]] = []
    with pgflow.Client(dsn, schema=schema) as client:
        store: Any = client._ops_store()
        original = store.prune_runs

        def timed(query: Any, limit: int, exclusive: bool) -> int | None:
            t0 = time.perf_counter()
            deleted: int | None = original(query, limit, exclusive)
            batches.append((time.perf_counter() - t0, deleted))
            return deleted

        store.prune_runs = timed
        dry_start = time.perf_counter()
        counted = client.prune(older_than="30d", dry_run=True)
        dry_seconds = time.perf_counter() - dry_start
        with Prober(dsn, schema, ids) as prober:
            start = time.perf_counter()
            deleted = client.prune(older_than="30d")
            seconds = time.perf_counter() - start
        durations = [d for d, _ in batches]
        # a run the writer held locked when a batch came by was skipped (SKIP LOCKED): the next pass
        # takes it
        later = client.prune(older_than="30d")
    return {
        "deleted": deleted, "skipped_then_next_pass": later, "counted": counted, "dry_run_seconds": dry_seconds, "seconds": seconds,
        "runs_per_s": deleted / seconds if seconds else float("nan"), "batches": len(batches),
        "largest_batch": max((n or 0 for _, n in batches), default=0),
        "batch_p50": statistics.median(durations), "batch_p95": bench.pct(durations, 95),
        "batch_max": max(durations), "probes": len(prober.latencies),
        "probe_max": max(prober.latencies, default=float("nan")),
        "probe_p99": bench.pct(prober.latencies, 99),
    }  # fmt: skip


def check_left(dsn: str, schema: str, kept: int) -> dict[str, int]:
    """What is left: every run to keep, nothing of the doomed ones (steps and events included)."""
    ident = sql.Identifier(schema)
    with psycopg.connect(dsn) as conn:
        runs = _count(conn, schema, "runs")
        keep_runs = conn.execute(sql.SQL("SELECT count(*) FROM {}.runs WHERE id LIKE 'keep-%'").format(ident))
        orphans = conn.execute(sql.SQL(
            "SELECT (SELECT count(*) FROM {s}.steps WHERE run_id NOT LIKE 'keep-%')"
            " + (SELECT count(*) FROM {s}.events WHERE run_id NOT LIKE 'keep-%')"
        ).format(s=ident))  # fmt: skip
        found = {"runs": runs, "kept": _one(keep_runs), "doomed_rows_left": _one(orphans)}
    assert found == {"runs": kept, "kept": kept, "doomed_rows_left": 0}, found
    return found


def _one(cur: psycopg.Cursor[Any]) -> int:
    row = cur.fetchone()
    return int(row[0]) if row else 0


# -- report ------------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    f, p = r["fill"], r["prune"]
    ok = "OK" if p["batch_max"] * 1000 < TARGET_MS else "OVER TARGET"
    server = r["server"]
    lines = [
        f"pgflow prune benchmark — {f['doomed']:,} terminal runs to delete ({args.steps} steps, "
        f"{args.events} events each; every 10th a parent of 2 children), {f['kept']:,} runs to keep",
        f"database: {server['source']}; PostgreSQL {server['server_version']}, fsync={server['fsync']}, "
        f"synchronous_commit={server['synchronous_commit']}",
        f"filled: {f['runs']:,} runs, {f['steps']:,} steps, {f['events']:,} events in {f['seconds']:.1f} s",
        "",
        f"raw INSERT+COMMIT, 1 connection        {r['raw_1']:,.0f} commits/s",
        f"dry run (count_prunable)               {p['counted']:,} runs in {ms(p['dry_run_seconds'])}",
        f"prune(older_than='30d')                {p['deleted']:,} runs in {p['seconds']:.2f} s = "
        f"{p['runs_per_s']:,.0f} runs/s (with their steps and events)",
        f"batches (≤ {PRUNE_BATCH:,} runs, 1 transaction each)  {p['batches']} "
        f"(largest {p['largest_batch']:,} runs)",
        f"batch transaction p50 / p95 / longest  {ms(p['batch_p50'])} / {ms(p['batch_p95'])} / "
        f"{ms(p['batch_max'])}   (target < {TARGET_MS:.0f} ms: {ok})",
        f"concurrent writer on doomed runs       {p['probes']:,} updates, p99 {ms(p['probe_p99'])}, "
        f"longest {ms(p['probe_max'])}; {p['skipped_then_next_pass']} run(s) it held were skipped "
        "and went in the next pass",
        f"left afterwards                        {r['left']['runs']:,} runs, all of them runs to keep; "
        f"{r['left']['doomed_rows_left']} steps/events of deleted runs",
    ]
    if r.get("explain"):
        lines += ["", "one batch, EXPLAIN (ANALYZE, BUFFERS), rolled back:", r["explain"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="PostgreSQL DSN (default: PGFLOW_DATABASE_URL, else an embedded server)")
    p.add_argument("--runs", type=int, default=100_000, help="terminal runs to delete (100000)")
    p.add_argument("--steps", type=int, default=3, help="step records per run (3)")
    p.add_argument("--events", type=int, default=2, help="events per run, the first consumed (2)")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="duration of the raw INSERT test (3)")
    p.add_argument("--explain", action="store_true", help="print the plan of one batch (rolled back)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE ('-': stdout)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark schemas")
    return p.parse_args(argv)


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with bench.database(args.dsn) as (dsn, where):
        suffix = uuid.uuid4().hex[:8]
        raw, schema = f"bench_raw_{suffix}", f"bench_prune_{suffix}"
        results.update(schema=schema, raw_schema=raw)
        try:
            results["server"] = {"source": where, **bench.server_settings(dsn)}
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(raw)))
                conn.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, payload text)").format(
                    sql.Identifier(raw, "raw_writes")))  # fmt: skip
            log("raw INSERT+COMMIT ...")
            results["raw_1"], _ = bench.raw_insert_rate(dsn, raw, 1, args.raw_seconds)
            log(f"filling {args.runs:,} runs ...")
            now = pendulum.now("UTC")
            results["fill"] = fill(dsn, schema, args, now)
            if args.explain:
                results["explain"] = explain(dsn, schema, now.subtract(days=30))
            log("pruning ...")
            results["prune"] = measure_prune(dsn, schema, doomed_ids(dsn, schema))
            results["left"] = check_left(dsn, schema, results["fill"]["kept"])
        finally:
            if not args.keep:
                bench.drop_schemas(dsn, (raw, schema))
    return results


def main(argv: list[str] | None = None) -> int:
    return bench.run_cli(argv, parse_args, run_benchmark, report)


if __name__ == "__main__":
    sys.exit(main())
