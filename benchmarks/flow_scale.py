"""pgflow scale benchmark: the claim and the 10-step throughput with a million runs in the tables.

    python benchmarks/flow_scale.py [--dsn DSN] [--runs 1000000] [--claims 1000] [--rounds 2] ...

Two schemas on ONE PostgreSQL: *empty* (the workflows registered, no run) and *big*, filled with
bulk SQL with ``--runs`` runs as the engine leaves them, a quarter each: completed (with their
step records and consumed event), waiting at an event (``WaitFor``), waiting on a timer (``Delay``,
due within 30 days) and pending behind a concurrency limit (parked, ``slot_held`` false, behind the
``concurrency=10`` workflow whose 10 places are held by runs waiting at an event). Then, same run:

(a) the raw single-connection INSERT+COMMIT rate of the server (as ``benchmarks/engine.py`` (a));
(b) the plain claim (``Store.claim``) and (c) the limited claim (``Store.claim(limited=...)``, the
    claim of a worker serving a workflow with limits) with ready work: p50/p99 on both schemas,
    the calls interleaved; ratio big/empty;
(d) the 10-step throughput through the public ``Engine`` (workflows without limits) on both
    schemas: steps/s, its ratio to (a), ratio big/empty;
(e) EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of the claim statements, plain and limited (and of
    ``park_runs``, ``unpark``, ``next_due``), custom and generic plans, on both schemas: on the big
    one no sequential scan of runs, steps or events, and at most 10x the buffers read on the empty
    one; and which plans the store's prepared claim statements used during (b)/(c);
(f) EXPLAIN of the claim and of ``next_due`` again after (d), before any VACUUM: what the dead row
    versions the steps left cost them (their scans of expired leases walk them until VACUUM).

DSN: ``--dsn``, else ``PGFLOW_DATABASE_URL``, else an embedded server in a temp dir (deleted
afterwards). The schemas are dropped at the end unless ``--keep``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pendulum
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow
from pgflow import Delay, Run, WaitFor, workflow
from pgflow.postgres import PostgresStore
from pgflow.postgres.queries import Queries


def _sibling(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` (its helpers: the embedded server, the raw INSERT rate, percentiles)."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"pgflow_benchmark_{name}_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


engine_bench = _sibling("engine")

LIMIT = 10  # concurrency of the limited workflow (places held in the big schema)
STEPS_WF, ORDER_WF, LIMITED_WF = "scale-steps", "scale-order", "scale-limited"
LEASE = pendulum.duration(seconds=60)
BIG_TABLES = ("runs", "steps", "events")

# -- workflows -----------------------------------------------------------------------------------------


def work(i: int) -> int:
    return i + 1


@workflow(STEPS_WF)
def steps_flow(ctx: pgflow.Context[Any]):
    """The throughput workload (and the ready work of the claim measurements): ``steps`` Run steps."""
    total = 0
    for i in range(ctx.input["steps"]):
        total = yield Run(f"step-{i}", work, total)
    return total


@workflow(ORDER_WF)
def order_flow(ctx: pgflow.Context[Any]):
    """The big schema's completed, event-waiting and timer-waiting runs are runs of this workflow."""
    yield Run("reserve", work, 1)
    yield WaitFor("payment", event="paid")
    yield Delay("cool-off", "7d")
    yield Run("ship", work, 2)
    return {"shipped": True}


@workflow(LIMITED_WF, concurrency=LIMIT, key_concurrency=2)
def limited_flow(ctx: pgflow.Context[Any]):
    """At most LIMIT in progress (2 per customer): the big schema has LIMIT waiting for approval (each
    of another customer), the rest parked on the workflow's limit."""
    yield Run("prepare", work, 1)
    yield WaitFor("approval", event="approved")


# -- the big schema -------------------------------------------------------------------------------------

# One run per i in 1..runs, as the engine leaves them (columns as the store writes them for each state):
# i % 4 = 0 completed, 1 waiting at an event, 2 waiting on a timer (due within 30 days), 3 parked
# behind the limited workflow, except its first LIMIT, which hold its places (waiting for approval).
# Priorities 10 (a tenth), -5 (a tenth) and 0; created over the last 30 days.
FILL_RUNS = """
INSERT INTO {schema}.runs (id, workflow_id, status, input, output, current_step_id, waiting_step_id,
    waiting_kind, waiting_event, waiting_wake_at, wake_at, due_at, created_at, updated_at, completed_at,
    lease_token, mailbox_seq, priority, concurrency_key, slot_held, parked)
SELECT md5(%(salt)s || i)::uuid::text,
       CASE WHEN k = 3 THEN %(limited_wf)s ELSE %(order_wf)s END,
       CASE k WHEN 0 THEN 'completed' WHEN 3 THEN CASE WHEN holder THEN 'paused' ELSE 'pending' END
              ELSE 'paused' END,
       json_build_object('order_id', i, 'customer', 'customer-' || (i %% 1000)),
       CASE WHEN k = 0 THEN json_build_object('shipped', true) END,
       CASE k WHEN 0 THEN 'ship' WHEN 1 THEN 'payment' WHEN 2 THEN 'cool-off'
              ELSE CASE WHEN holder THEN 'approval' END END,
       CASE k WHEN 1 THEN 'payment' WHEN 2 THEN 'cool-off' WHEN 3 THEN CASE WHEN holder THEN 'approval' END END,
       CASE k WHEN 1 THEN 'wait_for' WHEN 2 THEN 'delay' WHEN 3 THEN CASE WHEN holder THEN 'wait_for' END END,
       CASE k WHEN 1 THEN 'paid' WHEN 3 THEN CASE WHEN holder THEN 'approved' END END,
       CASE WHEN k = 2 THEN wake END,
       CASE WHEN k = 2 THEN wake END,
       CASE WHEN k = 2 THEN wake END,
       created, created + interval '2 seconds',
       CASE WHEN k = 0 THEN created + interval '2 seconds' END,
       CASE k WHEN 0 THEN 3 WHEN 1 THEN 1 WHEN 2 THEN 2 ELSE CASE WHEN holder THEN 1 ELSE 0 END END,
       CASE WHEN k IN (0, 2) THEN 1 ELSE 0 END,
       CASE (i / 4) %% 10 WHEN 0 THEN 10 WHEN 1 THEN -5 ELSE 0 END,
       CASE WHEN k = 3 THEN 'customer-' || (i %% 1000) END,
       k = 3 AND holder,
       CASE WHEN k = 3 AND NOT holder THEN 'workflow' END
FROM generate_series(1, %(runs)s) AS i,
LATERAL (SELECT i %% 4 AS k, i < 4 * %(limit)s AS holder,
                %(t0)s::timestamptz + i * %(spacing)s::interval AS created,
                %(now)s::timestamptz + interval '1 hour' + ((i::bigint * 7919) %% %(runs)s) * %(spacing)s::interval AS wake
        ) AS v
"""

# The step records of each state (steps run 50 ms apart from the run's creation).
FILL_STEPS = """
INSERT INTO {schema}.steps (run_id, step_id, kind, status, output, attempts, started_at, completed_at,
    wake_at, event, seq)
SELECT r.id, s.step_id, s.kind, s.status, s.output::json, CASE WHEN s.kind = 'run' THEN 1 ELSE 0 END,
       r.created_at + s.seq * interval '50 milliseconds',
       CASE WHEN s.status = 'completed' THEN r.created_at + (s.seq + 1) * interval '50 milliseconds' END,
       CASE WHEN s.status = 'waiting' AND s.kind = 'delay' THEN r.wake_at END, s.event, s.seq
FROM {schema}.runs AS r
JOIN (VALUES
    ('completed', 1, 'reserve', 'run', 'completed', '2', NULL),
    ('completed', 2, 'payment', 'wait_for', 'completed', '{{"amount": 42}}', 'paid'),
    ('completed', 3, 'cool-off', 'delay', 'completed', NULL, NULL),
    ('completed', 4, 'ship', 'run', 'completed', '3', NULL),
    ('event', 1, 'reserve', 'run', 'completed', '2', NULL),
    ('event', 2, 'payment', 'wait_for', 'waiting', NULL, 'paid'),
    ('timer', 1, 'reserve', 'run', 'completed', '2', NULL),
    ('timer', 2, 'payment', 'wait_for', 'completed', '{{"amount": 42}}', 'paid'),
    ('timer', 3, 'cool-off', 'delay', 'waiting', NULL, NULL),
    ('holder', 1, 'prepare', 'run', 'completed', '2', NULL),
    ('holder', 2, 'approval', 'wait_for', 'waiting', NULL, 'approved')
) AS s(state, seq, step_id, kind, status, output, event)
ON s.state = CASE WHEN r.status = 'completed' THEN 'completed' WHEN r.slot_held THEN 'holder'
                  WHEN r.waiting_kind = 'delay' THEN 'timer' WHEN r.waiting_kind = 'wait_for' THEN 'event' END
"""

# The 'paid' event the completed and timer-waiting runs consumed.
FILL_EVENTS = """
INSERT INTO {schema}.events (run_id, name, data, created_at, consumed_by_step, consumed_at)
SELECT id, 'paid', '{{"amount": 42}}', created_at + interval '1 second', 'payment',
       created_at + interval '1 second'
FROM {schema}.runs WHERE workflow_id = %(order_wf)s AND (status = 'completed' OR waiting_kind = 'delay')
"""

# Ready work for the claims: n runs of the steps workflow, due now, as start_workflow writes them.
READY = """
INSERT INTO {schema}.runs (id, workflow_id, status, input, due_at, created_at, updated_at)
SELECT gen_random_uuid()::text, %(wf)s, 'pending', '{{"steps": 10}}', %(now)s, %(now)s, %(now)s
FROM generate_series(1, %(n)s)
"""

STATES = """
SELECT CASE WHEN status = 'completed' THEN 'completed' WHEN parked IS NOT NULL THEN 'parked'
            WHEN slot_held THEN 'holding a place' WHEN waiting_kind = 'delay' THEN 'timer'
            WHEN waiting_kind = 'wait_for' THEN 'event' ELSE status END AS state, count(*)
FROM {schema}.runs GROUP BY 1 ORDER BY 1
"""


def ident(schema: str, table: str | None = None) -> sql.Identifier:
    return sql.Identifier(schema, table) if table else sql.Identifier(schema)


def scalar(conn: psycopg.Connection[Any], query: sql.Composable, params: Any = None) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def create(dsn: str, schema: str) -> None:
    """Migrate a fresh schema and register the three workflows, as an Engine does at start."""
    engine = pgflow.Engine(
        dsn, schema=schema, workflows=[steps_flow, order_flow, limited_flow], concurrency=1
    )
    engine.start(worker=False)
    engine.stop()


def fill(dsn: str, schema: str, runs: int) -> dict[str, Any]:
    """Fill ``schema`` with ``runs`` runs (FILL_*), then VACUUM ANALYZE (as autovacuum would on a live
    table) and CHECKPOINT (when allowed), so the fill's writes do not land in the measurements."""
    now = pendulum.now("UTC")
    params = {
        "salt": schema, "runs": runs, "limit": LIMIT, "order_wf": ORDER_WF, "limited_wf": LIMITED_WF,
        "now": now, "t0": now.subtract(days=30), "spacing": pendulum.duration(days=30) / max(runs, 1),
    }  # fmt: skip
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            for statement in (FILL_RUNS, FILL_STEPS, FILL_EVENTS):
                conn.execute(sql.SQL(statement).format(schema=ident(schema)), params)
        filled = time.perf_counter() - t0
        for table in ("runs", "steps", "events", "workflows"):
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(ident(schema, table)))
        with contextlib.suppress(psycopg.Error):
            conn.execute("CHECKPOINT")
        states = dict(conn.execute(sql.SQL(STATES).format(schema=ident(schema))).fetchall())
        size = sql.SQL("SELECT pg_total_relation_size(%s::regclass)")
        sizes = {t: scalar(conn, size, (f'"{schema}".{t}',)) for t in ("runs", "steps", "events")}
        rows = {
            t: scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(ident(schema, t)))
            for t in ("steps", "events")
        }
    return {"runs": runs, "fill_s": filled, "total_s": time.perf_counter() - t0, "states": states,
            "bytes": sizes, "rows": rows}  # fmt: skip


def dead_rows(dsn: str, schema: str) -> int:
    """Dead row versions in ``schema``'s runs table (the statistics' estimate): what VACUUM removes,
    and what the index scans of the claim walk over until it does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_stat_force_next_flush()")
        return scalar(conn, sql.SQL(
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'runs'"
        ), (schema,))  # fmt: skip


def add_ready(conn: psycopg.Connection[Any], schema: str, n: int) -> None:
    if n > 0:
        conn.execute(
            sql.SQL(READY).format(schema=ident(schema)), {"wf": STEPS_WF, "now": pendulum.now("UTC"), "n": n}
        )


def clear_ready(conn: psycopg.Connection[Any], schema: str) -> None:
    """Delete the claims' ready work (and what it left: claimed runs), keeping the schema as filled."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE workflow_id = %s AND status IN ('pending', 'running')").format(
            ident(schema, "runs")
        ),
        (STEPS_WF,),
    )


# -- (b)/(c) claim latency ------------------------------------------------------------------------------

# What a worker claims: the plain claim, for an engine whose workflows have no limits, and the limited
# claim (a transaction: lock_limits, slots_in_use, expired/ready candidates, claim_ids) for an engine
# that also serves the limited workflow.
VARIANTS: dict[str, tuple[list[str], list[str]]] = {
    "plain": ([STEPS_WF, ORDER_WF], []),
    "limited": ([STEPS_WF, ORDER_WF, LIMITED_WF], [LIMITED_WF]),
}


def claim_latency(
    dsn: str, schemas: dict[str, str], calls: int, backlog: int, limit: int, warmup: int = 10
) -> dict[str, dict[str, Any]]:
    """Time ``Store.claim`` (``limit`` runs) ``calls`` times per schema and variant, the calls of the
    four (schema, variant) pairs interleaved in random order so that load from elsewhere hits them
    alike. Each schema keeps ``backlog`` ready runs: after each call, untimed, the claimed runs are
    deleted and as many new ready runs inserted. Returns {variant: {schema label: figures}}."""
    pairs = [(label, variant) for label in schemas for variant in VARIANTS]
    samples: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    pool = ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True, name="scale")
    stores = {label: PostgresStore(pool, schema) for label, schema in schemas.items()}
    rng = random.Random(42)
    try:
        with psycopg.connect(dsn, autocommit=True) as admin:
            for schema in schemas.values():
                clear_ready(admin, schema)
                add_ready(admin, schema, backlog)
            for i in range(warmup + calls):
                rng.shuffle(pairs)
                for label, variant in pairs:
                    workflow_ids, limited = VARIANTS[variant]
                    now = pendulum.now("UTC")
                    t0 = time.perf_counter()
                    claimed = stores[label].claim("scale-bench", workflow_ids, now, LEASE, limit, limited)
                    elapsed = time.perf_counter() - t0
                    if len(claimed) != limit:
                        raise RuntimeError(f"{variant} claim on {label} got {len(claimed)} runs, not {limit}")
                    if i >= warmup:
                        samples[(label, variant)].append(elapsed)
                    admin.execute(
                        sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(ident(schemas[label], "runs")),
                        ([c.run.id for c in claimed],),
                    )
                    add_ready(admin, schemas[label], len(claimed))
            for schema in schemas.values():
                clear_ready(admin, schema)
        with pool.connection() as conn:
            plans = plan_counts(conn, schemas, limit)
    finally:
        pool.close()
    out: dict[str, dict[str, Any]] = {"plans": plans}
    for (label, variant), values in samples.items():
        out.setdefault(variant, {})[label] = {
            "calls": len(values), "p50": engine_bench.pct(values, 50), "p99": engine_bench.pct(values, 99),
            "mean": sum(values) / len(values),
        }  # fmt: skip
    return out


CLAIM_STATEMENTS = (
    "claim",
    "lock_limits",
    "slots_in_use",
    "expired_candidates",
    "ready_candidates",
    "claim_ids",
)


def _normal(text: str) -> str:
    return re.sub(r"\$\d+|%\(\w+\)s", "?", text).strip()


def plan_counts(
    conn: psycopg.Connection[Any], schemas: dict[str, str], limit: int
) -> dict[str, dict[str, list[int]]]:
    """{schema label: {statement: [generic plans, custom plans]}}: how PostgreSQL planned the store's
    prepared claim statements on this connection (pg_prepared_statements; empty before PostgreSQL 14)."""
    try:
        rows = conn.execute(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
        ).fetchall()
    except psycopg.Error:
        return {}
    found = {_normal(text): [int(g), int(c)] for text, g, c in rows}
    out: dict[str, dict[str, list[int]]] = {}
    for label, schema in schemas.items():
        queries = Queries(schema)
        for name in CLAIM_STATEMENTS:
            counts = found.get(_normal(statement(queries, name, limit).decode()))
            if counts is not None:
                out.setdefault(label, {})[name] = counts
    return out


# -- (d) throughput ------------------------------------------------------------------------------------


def throughput(dsn: str, schema: str, runs: int, steps: int, concurrency: int) -> dict[str, Any]:
    """``benchmarks/engine.py`` (b) on ``schema``: VACUUM, as autovacuum would (its default
    INDEX_CLEANUP AUTO leaves the indexes alone while under 2 % of the table's pages hold dead rows:
    on the big schema the dead index entries of the earlier measurements stay, as they would in
    production), enqueue ``runs`` runs of ``steps`` Run steps (producer only), start the worker
    (workflows without limits) and time from its start to the ``completed_at`` of the last run.
    The runs are deleted afterwards (the schema keeps its size)."""
    pool = ConnectionPool(dsn, min_size=1, max_size=concurrency + 4, kwargs={"autocommit": True}, open=True,
                          name="scale-throughput")  # fmt: skip
    runs_table = ident(schema, "runs")
    try:
        engine = pgflow.Engine(
            pool=pool, schema=schema, workflows=[steps_flow, order_flow], concurrency=concurrency
        )
        engine.start(worker=False)
        with psycopg.connect(dsn, autocommit=True) as stats:
            clear = sql.SQL("DELETE FROM {} WHERE workflow_id = %s").format(runs_table)
            stats.execute(clear, (STEPS_WF,))
            stats.execute(sql.SQL("VACUUM {}, {}, {}").format(*(ident(schema, t) for t in BIG_TABLES)))
            for _ in range(runs):
                engine.start_workflow(steps_flow, {"steps": steps})
            cpu = engine_bench.CpuMeter(stats)
            cpu.start()
            wall0 = time.time()
            engine.start()
            try:
                engine_bench.wait_all_done(dsn, schema, STEPS_WF, runs, timeout=60 + runs * steps / 50)
            finally:
                engine.stop()
            result: dict[str, Any] = cpu.stop()
            row = stats.execute(
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE status = 'completed'), extract(epoch FROM max(completed_at)) "
                    "FROM {} WHERE workflow_id = %s"
                ).format(runs_table),
                (STEPS_WF,),
            ).fetchone()
            assert row is not None
            completed, last = int(row[0]), float(row[1])
            if completed != runs:
                raise RuntimeError(f"{runs - completed} of {runs} runs did not complete on {schema}")
            stats.execute(clear, (STEPS_WF,))
    finally:
        pool.close()
    elapsed = last - wall0
    return {**result, "runs": runs, "steps": steps, "seconds": elapsed, "steps_per_s": runs * steps / elapsed}


# -- (e)/(f) EXPLAIN -----------------------------------------------------------------------------------


def explain_params(dsn: str, schema: str, limit: int) -> dict[str, dict[str, Any]]:
    """Each claim statement (plain: ``claim``; limited: the statements of ``ops.claim_limited``) with
    the parameters the store gives it, plus ``next_due`` (an idle worker) and ``unpark`` (a run
    holding a place ends)."""
    from pgflow.limits import EXTRA_CANDIDATES

    now = pendulum.now("UTC")
    plain, _ = VARIANTS["plain"]
    every, limited = VARIANTS["limited"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        ready = [r[0] for r in conn.execute(
            sql.SQL("SELECT id FROM {} WHERE workflow_id = %s AND status = 'pending' ORDER BY created_at, id "
                    "LIMIT %s").format(ident(schema, "runs")), (STEPS_WF, limit)).fetchall()]  # fmt: skip
    lease = {"owner": "scale-bench", "now": now, "lease_expires_at": now + LEASE}
    return {
        "claim": {**lease, "workflow_ids": plain, "runs_channel": "scale_bench_runs"},
        "lock_limits": {"workflow_ids": limited},
        "slots_in_use": {"workflow_ids": limited},
        "expired_candidates": {"workflow_ids": every, "now": now, "limit": limit},
        "ready_candidates": {"workflow_ids": every, "now": now, "limit": limit + EXTRA_CANDIDATES},
        "park_runs": {"ids": ready[:1], "whys": ["workflow"], "now": now},
        "claim_ids": {**lease, "ids": ready, "placed": ready},
        "unpark": {"workflow_id": LIMITED_WF, "key": "customer-3", "now": now},
        "next_due": {"workflow_ids": plain},
    }


_PLACEHOLDER = re.compile(rb"%\((\w+)\)s")
AFTER_STATEMENTS = ("claim", "next_due")  # (f): what reads expired leases, as dead rows build up


def statement(queries: Queries, name: str, limit: int) -> bytes:
    """The text of a store statement as the store sends it (the claim has its limit in its text)."""
    return queries.render(name, {"limit": sql.Literal(limit)}) if name == "claim" else queries[name]


def numbered(text: bytes) -> tuple[bytes, list[str]]:
    """A query with ``%(name)s`` placeholders as PREPARE takes it ($1, $2, … in order of first use)."""
    names = list(dict.fromkeys(m.decode() for m in _PLACEHOLDER.findall(text)))
    return _PLACEHOLDER.sub(lambda m: b"$%d" % (names.index(m.group(1).decode()) + 1), text), names


def explain(
    dsn: str, schema: str, limit: int, backlog: int, only: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of each statement of ``explain_params``, with ``backlog``
    ready runs: the custom plan (planned for these values, as a statement's first executions are)
    and the generic plan (PREPARE, then EXECUTE with plan_cache_mode = force_generic_plan: what a
    prepared statement may switch to after five executions). Each runs in a transaction rolled back."""
    queries = Queries(schema)
    out: dict[str, dict[str, Any]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        clear_ready(conn, schema)
        add_ready(conn, schema, backlog)
        for name, params in explain_params(dsn, schema, limit).items():
            if only and name not in only:
                continue
            text = statement(queries, name, limit)
            positional, names = numbered(text)
            plans: dict[str, Any] = {}
            with conn.transaction(force_rollback=True):
                found = conn.execute(b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, params).fetchone()
                assert found is not None
                plans["custom"] = summarize(found[0][0])
            conn.execute(b"PREPARE scale_explain AS " + positional)
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    args = sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
                    found = conn.execute(
                        sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE scale_explain ({})").format(
                            args
                        )
                    ).fetchone()
                    assert found is not None
                    plans["generic"] = summarize(found[0][0])
            finally:
                conn.execute("DEALLOCATE scale_explain")
            out[name] = plans
        clear_ready(conn, schema)
    return out


def summarize(plan: dict[str, Any]) -> dict[str, Any]:
    """What a JSON plan did: sequential scans of the big tables, the indexes it read, rows the scans of
    runs removed by filters, shared buffers touched, execution time."""
    seq, indexes, removed = [], set(), 0
    stack = [plan["Plan"]]
    while stack:
        node = stack.pop()
        stack.extend(node.get("Plans", []))
        relation = node.get("Relation Name")
        if node["Node Type"] == "Seq Scan" and relation in BIG_TABLES:
            seq.append(relation)
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        if relation == "runs":
            removed += int(
                node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
            ) * max(1, int(node.get("Actual Loops", 1)))
    top = plan["Plan"]
    return {
        "seq_scans": seq, "indexes": sorted(indexes), "runs_rows_removed": removed,
        "buffers": int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)),
        "ms": float(plan.get("Execution Time", 0.0)),
        "jit_ms": float(plan.get("JIT", {}).get("Timing", {}).get("Total", 0.0)),
    }  # fmt: skip


# -- report --------------------------------------------------------------------------------------------

TARGET_RATIO = 1.2  # big/empty: claim latency at most, throughput at least 1/1.2
TARGET_DROP = 0.10  # steps/s as a share of raw INSERT: at most 10 % lower on the big schema
READS_FACTOR = 10  # EXPLAIN: a statement reads at most 10x the buffers it reads on the empty schema


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def throughput_figures(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per schema, the best round's steps/s and the best ratio to the raw INSERT rate of its round."""
    out = {}
    for label in ("empty", "big"):
        out[label] = {
            "steps_per_s": max(r[label]["steps_per_s"] for r in rounds),
            "vs_raw": max(r[label]["steps_per_s"] / r["raw"] for r in rounds),
            "busy": max((r[label].get("machine_busy") or 0.0) for r in rounds),
        }
    return out


def explain_checks(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(statement and plan, what it did, met): no Seq Scan on runs/steps/events and reads bounded by
    READS_FACTOR x the empty schema's in the custom plan, and in the generic plan when the store's
    prepared statement used it (otherwise the generic plan is shown for information: None)."""
    big, empty = r["explain"]["big"], r["explain"]["empty"]
    used = r["claims"]["plans"].get("big", {})
    rows = []
    for name, plans in big.items():
        for mode, plan in plans.items():
            base = empty[name][mode]["buffers"]
            scan = ", ".join(f"Seq Scan on {t}" for t in plan["seq_scans"]) or "no Seq Scan"
            text = (f"{plan['ms']:.2f} ms, {plan['buffers']:,} buffers (empty: {base:,}); {scan}; "
                    f"{', '.join(plan['indexes']) or 'no index'}")  # fmt: skip
            if plan["jit_ms"]:
                text += f"; JIT {plan['jit_ms']:.0f} ms"
            ok = not plan["seq_scans"] and plan["buffers"] <= READS_FACTOR * max(base, 10)
            counts = used.get(name)
            if mode == "generic":
                if counts is None or counts[0] == 0:
                    note = f"not used: {counts[1]:,} custom plans" if counts else "not used"
                    rows.append((f"{name} (generic plan)", f"{text} [{note}]", None))
                    continue
                text += f" [used {counts[0]:,} times]"
            rows.append((f"{name} ({mode} plan)", text, ok))
    return rows


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    fill_info, claims = r["fill"], r["claims"]
    thr = throughput_figures(r["rounds"])
    raws = [x["raw"] for x in r["rounds"]]
    states = ", ".join(f"{k} {v:,}" for k, v in sorted(fill_info["states"].items()))
    mb = {t: n / 2**20 for t, n in fill_info["bytes"].items()}
    lines = [
        f"big schema: {fill_info['runs']:,} runs ({states}), {fill_info['rows']['steps']:,} step records, "
        f"{fill_info['rows']['events']:,} events; with indexes runs {mb['runs']:,.0f} MB, steps "
        f"{mb['steps']:,.0f} MB, events {mb['events']:,.0f} MB; filled in {fill_info['fill_s']:.0f} s "
        f"(+{fill_info['total_s'] - fill_info['fill_s']:.0f} s VACUUM ANALYZE, CHECKPOINT)",
        "",
    ]
    n = f"{fill_info['runs']:,}"
    rows: list[tuple[str, str, str, str]] = [
        ("(a) raw INSERT+COMMIT, 1 connection", f"{max(raws):,.0f} commits/s (rounds: "
         + ", ".join(f"{x:,.0f}" for x in raws) + ")", "", ""),
    ]  # fmt: skip
    for key, label in (("plain", "(b) claim"), ("limited", "(c) limited claim")):
        e, b = claims[key]["empty"], claims[key]["big"]
        for q in ("p50", "p99"):
            ratio = b[q] / e[q]
            target = f"<= x{TARGET_RATIO}" if q == "p50" else ""
            rows.append((f"{label} of {args.limit}, {q}: empty -> {n} runs",
                         f"{ms(e[q])} -> {ms(b[q])} (x{ratio:.2f})", target,
                         _ok(ratio <= TARGET_RATIO) if q == "p50" else ""))  # fmt: skip
    e, b = thr["empty"], thr["big"]
    ratio = b["steps_per_s"] / e["steps_per_s"]
    drop = 1 - b["vs_raw"] / e["vs_raw"]
    rows += [
        (f"(d) {args.steps}-step throughput: empty -> {n} runs",
         f"{e['steps_per_s']:,.0f} -> {b['steps_per_s']:,.0f} steps/s (x{ratio:.2f})",
         f">= x{1 / TARGET_RATIO:.2f}", _ok(ratio >= 1 / TARGET_RATIO)),
        ("(d) steps/s vs raw 1 connection: empty -> big", f"{e['vs_raw']:.0%} -> {b['vs_raw']:.0%} "
         f"(drop {drop:.0%})", f"drop <= {TARGET_DROP:.0%}", _ok(drop <= TARGET_DROP)),
        ("(d) machine CPU busy meanwhile (all processes)", f"{e['busy']:.0%} -> {b['busy']:.0%} of "
         f"{r['rounds'][0]['big'].get('cpus', '?')} CPUs", "", ""),
    ]  # fmt: skip
    for name, text, ok in explain_checks(r):
        rows.append((f"(e) EXPLAIN {name}", text, "" if ok is None else "no Seq Scan, reads <= "
                     f"{READS_FACTOR}x", "" if ok is None else _ok(ok)))  # fmt: skip
    for label, plans in r["claims"]["plans"].items():
        rows.append((f"(e) generic plans of the store's prepared statements, {label}",
                     ", ".join(f"{k} {g}/{g + c}" for k, (g, c) in plans.items()), "", ""))  # fmt: skip
    used = r["claims"]["plans"].get("big", {})
    for name in AFTER_STATEMENTS:
        mode = "generic" if used.get(name, [0])[0] else "custom"
        parts = []
        for label in ("big", "empty"):
            now, fresh = r["after"][label]["explain"][name][mode], r["explain"][label][name][mode]
            parts.append(f"{label}: {now['ms']:.2f} ms, {now['buffers']:,} buffers (after VACUUM: "
                         f"{fresh['buffers']:,}), {r['after'][label]['dead']:,} dead rows in runs")  # fmt: skip
        rows.append((f"(f) EXPLAIN {name} ({mode} plan) after (d), no VACUUM", "; ".join(parts), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    head = ("figure", "measured", "target", "")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    missed = [row[0] for row in rows if row[3] == "MISSED"]
    lines += ["", "all targets met" if not missed else "MISSED: " + "; ".join(missed)]
    return "\n".join(lines)


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dsn", help="PostgreSQL DSN (default: PGFLOW_DATABASE_URL, else an embedded server)")
    p.add_argument("--runs", type=int, default=1_000_000, help="runs in the big schema (1000000)")
    p.add_argument("--claims", type=int, default=1000, help="timed claims per schema and variant (1000)")
    p.add_argument("--backlog", type=int, default=50, help="ready runs kept while claiming (50)")
    p.add_argument("--limit", type=int, default=10, help="runs per claim (10, as Engine(concurrency=10))")
    p.add_argument("--throughput-runs", type=int, default=1000, help="runs of the throughput workload (1000)")
    p.add_argument("--steps", type=int, default=10, help="Run steps per run of that workload (10)")
    p.add_argument("--concurrency", type=int, default=10, help="the engine's concurrency (10)")
    p.add_argument("--rounds", type=int, default=2, help="throughput rounds, alternating schemas (2)")
    p.add_argument("--raw-seconds", type=float, default=3.0, help="duration of each raw INSERT test (3)")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON to FILE ('-': stdout)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark schemas")
    return p.parse_args(argv)


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    tag = uuid.uuid4().hex[:8]
    schemas = {"empty": f"scale_empty_{tag}", "big": f"scale_big_{tag}"}
    raw = f"scale_raw_{tag}"
    with engine_bench.database(args.dsn) as (dsn, where):
        try:
            results["server"] = {"source": where, **engine_bench.server_settings(dsn)}
            log(
                f"database: {where}; "
                + ", ".join(f"{k}={v}" for k, v in results["server"].items() if k != "source")
            )
            results["schemas"] = schemas
            for schema in schemas.values():
                create(dsn, schema)
            log(f"filling {schemas['big']} with {args.runs:,} runs ...")
            results["fill"] = fill(dsn, schemas["big"], args.runs)
            fill(dsn, schemas["empty"], 0)
            log("(e) EXPLAIN ...")
            results["explain"] = {label: explain(dsn, schema, args.limit, args.backlog)
                                  for label, schema in schemas.items()}  # fmt: skip
            log(f"(b)/(c) {args.claims} claims per schema and variant ...")
            results["claims"] = claim_latency(dsn, schemas, args.claims, args.backlog, args.limit)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(raw)))
                conn.execute(sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, payload text)").format(
                    ident(raw, "raw_writes")))  # fmt: skip
            results["rounds"] = []
            for i in range(args.rounds):
                log(f"(a)/(d) round {i + 1} of {args.rounds}: raw INSERT, throughput ...")
                found: dict[str, Any] = {
                    "raw": engine_bench.raw_insert_rate(dsn, raw, 1, args.raw_seconds)[0]
                }
                for label in ("empty", "big") if i % 2 == 0 else ("big", "empty"):
                    found[label] = throughput(
                        dsn, schemas[label], args.throughput_runs, args.steps, args.concurrency
                    )
                results["rounds"].append(found)
            log("(f) EXPLAIN after the rounds, without VACUUM ...")
            results["after"] = {
                label: {"dead": dead_rows(dsn, schema),
                        "explain": explain(dsn, schema, args.limit, args.backlog, only=AFTER_STATEMENTS)}
                for label, schema in schemas.items()
            }  # fmt: skip
        finally:
            if not args.keep:
                engine_bench.drop_schemas(dsn, [*schemas.values(), raw])
    return results


def main(argv: list[str] | None = None) -> int:
    return engine_bench.run_cli(argv, parse_args, run_benchmark, report)


if __name__ == "__main__":
    sys.exit(main())
