"""Flow control across worker processes: concurrency limits hold, and a schedule fires each tick once
(SPEC §16 "Concurrency limits", "Schedules").

Three worker processes (``tests/procs/flow_worker.py``, ``THREADS`` step threads each, so the limits
and not the threads hold runs back) serve ``keyed`` (``key_concurrency=1``: ``RUNS_PER_KEY`` runs for
each of ``KEYS`` keys, plus ``KEYLESS`` runs without a key, which that limit does not count) and
``capped`` (``concurrency=3``: ``CAPPED`` runs, some with a concurrency key, which does not matter to
it). Each run is enter / work (sleep) / nap (Delay: waiting, it keeps its place) / leave.

Two views of "in progress", both checked:

- the database's: a sampler thread reads ``runs`` every ``SAMPLE_EVERY`` s, in one statement (one
  snapshot). A run is in progress from its first claim (``lease_token > 0``: every claim increments
  it) until it is terminal; that count must equal the runs holding a place (``slot_held``) in every
  sample, and never exceed 1 per key of ``keyed`` nor 3 for ``capped``;
- the user's: the steps themselves count the runs between ``enter`` and ``leave`` per scope, under a
  row lock (``gauge.peak``), and record each run's interval (``visits``), checked afterwards for
  overlaps.

The sampler must also have seen contention — runs parked behind a busy key and behind ``capped``'s
limit, and ``capped`` at its limit — else the test proves nothing. Every run must complete.

Schedules: three worker processes (``tests/procs/schedule_worker.py``) each declare the same
every-second schedule (``* * * * * *``, ``Engine(schedules=[...])``), so each upserts it and each
fires it, for ``SCHEDULE_FOR`` s; the test then pauses it, lets the tick runs end and stops the
workers. From SQL: every tick run's idempotency key is ``schedule:every-second:<tick, ISO-8601 UTC>``,
each tick from the first after the schedule's creation to the last has exactly one run (none missing
in between, nor at the end before the pause), each run's step executed once (a side table gets a row
per execution), and each run was created within 2 s of its tick, never before it. A trigger on
``runs`` records which process inserted each tick run (its connections' ``application_name``):
printed, not asserted, since which engine wins a tick is not specified.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

import pgflow
from procs.common import connect, eventually, execute, table

pytestmark = [pytest.mark.postgres, pytest.mark.process, pytest.mark.slow]

TESTS = Path(__file__).parent
WORKERS = 3
THREADS = 8  # step threads per worker: 24 in all, more than the places the limits allow at once
PAUSE = 0.1  # seconds each run's ``work`` step sleeps, and its ``nap`` Delay lasts
KEYS = 20
RUNS_PER_KEY = 10
KEYLESS = 5
CAPPED = 30
CAPPED_LIMIT = 3
SAMPLE_EVERY = 0.05
DRAIN_TIMEOUT = 180.0  # seconds every run may take to end (generous: two shared cores)
TERMINAL = ("completed", "failed", "cancelled")

SAMPLE = """
SELECT workflow_id, concurrency_key,
    count(*) FILTER (WHERE lease_token > 0 AND status NOT IN ('completed', 'failed', 'cancelled')),
    count(*) FILTER (WHERE slot_held),
    count(*) FILTER (WHERE parked IS NOT NULL)
FROM {} WHERE workflow_id IN ('keyed', 'capped')
GROUP BY workflow_id, concurrency_key
"""


@dataclass(frozen=True)
class Group:
    """One (workflow, key) in one sample."""

    in_progress: int  # claimed at least once, not terminal
    slot_held: int
    parked: int


@dataclass
class Sampler:
    """A thread reading the runs' state every ``SAMPLE_EVERY`` s until stopped."""

    dsn: str
    schema: str
    samples: list[dict[tuple[str, str | None], Group]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="flow-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _loop(self) -> None:
        query = sql.SQL(SAMPLE).format(table(self.schema, "runs"))
        try:
            with connect(self.dsn) as conn:
                while not self._stop.wait(SAMPLE_EVERY):
                    rows = conn.execute(query).fetchall()
                    self.samples.append({(w, k): Group(*counts) for w, k, *counts in rows})
        except BaseException as exc:  # reported by the test
            self.error = exc


def _spawn(stderr: Path, module: str, *args: str) -> subprocess.Popen[str]:
    """A worker process, ``python -m module args`` (stderr to a file: a pipe nobody reads could fill
    up and block it); it imports this checkout's pgflow when this process does (PYTHONPATH is kept,
    tests/ put in front)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with open(stderr, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=TESTS, env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip


def _stderr(tmp_path: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted(tmp_path.glob("worker-*.err"))
    )


def _wait_ready(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    """The worker printed ``ready`` and imports the same pgflow as this process (this checkout's)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the worker prints it within seconds, or exits (EOF)
    word, _, path = line.strip().partition(" ")
    if word != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker did not start: {line!r}\n{_stderr(tmp_path)}")
    assert Path(path).resolve() == Path(pgflow.__file__).resolve(), (path, pgflow.__file__)


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes to kill (by their own pid) if the test leaves them running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _overlaps(intervals: list[tuple[Any, Any]]) -> int:
    """The most intervals ``[entered, left]`` open at once (a leave at the same instant as an enter
    counts as before it)."""
    edges = sorted(
        [(t, 1) for t, _ in intervals] + [(t, -1) for _, t in intervals], key=lambda e: (e[0], e[1])
    )
    most = open_ = 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return most


def _load(
    client: pgflow.Client, dsn: str, schema: str, keys: list[str], started: dict[str, tuple[str, str | None]],
    tmp_path: Path,
) -> float:  # fmt: skip
    """Start every run (recorded in ``started``: run id -> (workflow, key)), wait until all have
    ended; how long that took."""
    began = time.monotonic()
    keyed, capped = pgflow.ref("keyed"), pgflow.ref("capped")
    for i in range(RUNS_PER_KEY):  # every key gets a backlog at once; capped runs interleaved
        for key in keys:
            started[client.start_workflow(keyed, {"key": key}, concurrency_key=key).id] = ("keyed", key)
        for j in range(CAPPED // RUNS_PER_KEY):
            key = f"c{j}" if j % 2 else None  # a key, without key_concurrency: not a limit
            started[client.start_workflow(capped, {}, concurrency_key=key).id] = ("capped", key)
        if i < KEYLESS:
            started[client.start_workflow(keyed, {"key": None}).id] = ("keyed", None)

    live = sql.SQL("SELECT count(*) FROM {} WHERE status <> ALL(%s)").format(table(schema, "runs"))
    try:
        eventually(lambda: execute(dsn, live, (list(TERMINAL),))[0][0] == 0, DRAIN_TIMEOUT, 0.25)
    except AssertionError:
        raise AssertionError(f"runs did not all end within {DRAIN_TIMEOUT} s\n{_stderr(tmp_path)}") from None
    return time.monotonic() - began


@pytest.mark.timeout(300)  # pyproject's 120 s is less than DRAIN_TIMEOUT
def test_limits_hold_across_worker_processes(
    pg_dsn: str, pg_schema: str, workers: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    keys = [f"k{i:02d}" for i in range(KEYS)]
    scopes = [f"key:{k}" for k in keys] + ["key:-", "capped"]
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        client.get_runs()  # migrate
        execute(pg_dsn, sql.SQL("CREATE TABLE {} (scope text PRIMARY KEY, peak int NOT NULL DEFAULT 0)").format(
            table(pg_schema, "gauge")))  # fmt: skip
        execute(pg_dsn, sql.SQL(
            "CREATE TABLE {} (run_id text PRIMARY KEY, scope text NOT NULL, entered_at timestamptz NOT NULL,"
            " left_at timestamptz)").format(table(pg_schema, "visits")))  # fmt: skip
        execute(pg_dsn, sql.SQL("INSERT INTO {} (scope) SELECT unnest(%s::text[])").format(
            table(pg_schema, "gauge")), (scopes,))  # fmt: skip

        for _ in range(WORKERS):  # started together, waited for in turn
            workers.append(_spawn(tmp_path / f"worker-{len(workers)}.err", "procs.flow_worker", pg_dsn,
                                  pg_schema, str(THREADS), str(PAUSE)))  # fmt: skip
        for proc in workers:
            _wait_ready(proc, tmp_path)  # each registered the workflows, with their limits

        sampler = Sampler(pg_dsn, pg_schema)
        sampler.start()
        started: dict[str, tuple[str, str | None]] = {}  # run id -> (workflow, key)
        try:
            took = _load(client, pg_dsn, pg_schema, keys, started, tmp_path)
        finally:
            sampler.stop()
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in workers]

        final = {run_id: client.get_run(run_id) for run_id in started}

    assert sampler.error is None, repr(sampler.error)
    samples = sampler.samples

    # -- the database's view, sample by sample
    per_key = max_capped = 0
    keys_at_once = 0  # keyed: keys with a run in progress in one sample
    mismatched: list[str] = []
    key_contended = capped_contended = capped_full = 0
    for n, sample in enumerate(samples):
        capped_now = sum(g.in_progress for (w, _), g in sample.items() if w == "capped")
        capped_parked = sum(g.parked for (w, _), g in sample.items() if w == "capped")
        max_capped = max(max_capped, capped_now)
        capped_full += capped_now == CAPPED_LIMIT
        capped_contended += capped_now == CAPPED_LIMIT and capped_parked > 0
        busy = 0
        for (w, k), g in sample.items():
            if g.in_progress != g.slot_held:
                mismatched.append(f"sample {n}: {w}/{k}: {g}")
            if w == "keyed" and k is not None:
                per_key = max(per_key, g.in_progress)
                busy += g.in_progress > 0
                key_contended += g.in_progress == 1 and g.parked > 0
        keys_at_once = max(keys_at_once, busy)

    # -- the user's view
    peaks = dict(execute(pg_dsn, sql.SQL("SELECT scope, peak FROM {}").format(table(pg_schema, "gauge"))))
    visits = collections.defaultdict(list)
    unfinished = []
    rows = execute(
        pg_dsn, sql.SQL("SELECT scope, entered_at, left_at FROM {}").format(table(pg_schema, "visits"))
    )
    for scope, entered_at, left_at in rows:
        if left_at is None:
            unfinished.append(scope)
        else:
            visits[scope].append((entered_at, left_at))
    overlap = {scope: _overlaps(intervals) for scope, intervals in visits.items()}
    user_per_key = max(max(peaks[f"key:{k}"], overlap.get(f"key:{k}", 0)) for k in keys)
    user_capped = max(peaks["capped"], overlap.get("capped", 0))

    statuses = collections.Counter(r.status.value for r in final.values())
    print(
        f"\nflow control: {WORKERS} workers x {THREADS} threads; keyed (key_concurrency=1): {KEYS} keys x "
        f"{RUNS_PER_KEY} runs + {KEYLESS} keyless, max in progress per key {per_key} (steps saw {user_per_key}), "
        f"up to {keys_at_once} keys at once (keyless: up to {peaks['key:-']} at once), a busy key with parked "
        f"runs in {key_contended} key-samples; capped (concurrency={CAPPED_LIMIT}): {CAPPED} runs, max in "
        f"progress {max_capped} (steps saw {user_capped}), at the limit in {capped_full} samples "
        f"({capped_contended} with runs parked); {len(samples)} samples every {SAMPLE_EVERY * 1000:g} ms; "
        f"{len(final)} runs {dict(statuses)} in {took:.1f} s"
    )

    assert codes == [0] * WORKERS, f"graceful stop: {codes}\n{_stderr(tmp_path)}"
    assert not mismatched, "in progress (claimed, not terminal) != slot_held:\n" + "\n".join(mismatched[:10])
    assert statuses == {"completed": len(started)}, statuses
    for run in final.values():
        workflow_id, key = started[run.id]
        assert run.concurrency_key == key, run
        if workflow_id == "keyed" and key is not None:
            assert run.output == 1, run  # alone in its key when it entered
        elif workflow_id == "capped":
            assert 1 <= run.output <= CAPPED_LIMIT, run
    assert len(samples) >= 20, "the sampler hardly ran"
    assert per_key == 1 and max_capped == CAPPED_LIMIT, (per_key, max_capped)
    assert not unfinished and sum(len(v) for v in visits.values()) == len(started), unfinished
    assert user_per_key == 1, {s: (peaks[s], overlap.get(s)) for s in scopes}
    assert 1 <= user_capped <= CAPPED_LIMIT, (peaks["capped"], overlap.get("capped"))
    # contention was seen, else the limits were never put to the test
    assert key_contended > 0 and capped_contended > 0, (key_contended, capped_contended)
    assert keys_at_once >= 2, keys_at_once  # keys do not wait for each other


# -- schedules ---------------------------------------------------------------------------------------

SCHEDULE_ID = "every-second"  # tests/procs/schedule_worker.py's
SCHEDULE_FOR = 10.0  # seconds the three processes run the schedule before the test pauses it
MIN_TICKS = 8
LATENESS = 2.0  # SPEC §16: a tick's run starts within 2 s of the tick while a worker runs
TICK_KEY = re.compile(rf"schedule:{re.escape(SCHEDULE_ID)}:(\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
SECOND = timedelta(seconds=1)

# Which process inserted each tick run: the engines' connections carry application_name
# "pgflow-<worker name>" (procs/schedule_worker.py); a trigger on runs records it, for tick runs only
# (an insert that meets an existing idempotency key inserts nothing and fires nothing).
FIRED = """
CREATE TABLE {fired} (run_id text PRIMARY KEY, app text NOT NULL, at timestamptz NOT NULL);
CREATE FUNCTION {record}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {fired} VALUES (NEW.id, current_setting('application_name'), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER record_fired AFTER INSERT ON {runs} FOR EACH ROW
    WHEN (NEW.idempotency_key LIKE 'schedule:%') EXECUTE FUNCTION {record}();
"""

TICK_RUNS = """
SELECT r.id, r.idempotency_key, r.status, r.created_at, f.app, f.at,
    (SELECT count(*) FROM {executions} AS e WHERE e.run_id = r.id),
    (SELECT min(e.worker) FROM {executions} AS e WHERE e.run_id = r.id)
FROM {runs} AS r LEFT JOIN {fired} AS f ON f.run_id = r.id
WHERE r.workflow_id = 'ticking'
"""


def _tick(key: str | None) -> datetime | None:
    """The tick a run's idempotency key names (None: not a key of this schedule's format)."""
    found = TICK_KEY.fullmatch(key or "")
    return datetime.strptime(found[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if found else None


@pytest.mark.timeout(240)
def test_every_second_schedule_starts_one_run_per_tick_across_processes(
    pg_dsn: str, pg_schema: str, workers: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """An every-second schedule (``* * * * * *``) that all 3 worker processes declare (each upserts it)
    and fire for ``SCHEDULE_FOR`` s starts exactly one run per tick, each within 2 s of its tick, and
    each run's step executes once (SPEC §16 "Schedules")."""
    names = [f"w{i}" for i in range(WORKERS)]
    with pgflow.Client(pg_dsn, schema=pg_schema) as client:
        client.get_runs()  # migrate
        execute(pg_dsn, sql.SQL(
            "CREATE TABLE {} (n bigserial PRIMARY KEY, run_id text NOT NULL, worker text NOT NULL,"
            " at timestamptz NOT NULL)").format(table(pg_schema, "executions")))  # fmt: skip
        execute(pg_dsn, sql.SQL(FIRED).format(
            fired=table(pg_schema, "fired"), record=table(pg_schema, "record_fired"),
            runs=table(pg_schema, "runs")))  # fmt: skip

        for name in names:  # started together, waited for in turn
            workers.append(_spawn(tmp_path / f"worker-{name}.err", "procs.schedule_worker", pg_dsn,
                                  pg_schema, name))  # fmt: skip
        for proc in workers:
            _wait_ready(proc, tmp_path)  # each upserted the schedule, and its worker fires it
        time.sleep(SCHEDULE_FOR)
        window_end = datetime.now(UTC)
        info = client.pause_schedule(SCHEDULE_ID)  # waits for a firing in flight; none after it
        runs = sql.SQL("SELECT count(*) FROM {} WHERE workflow_id = 'ticking' AND status <> ALL(%s)")
        try:
            eventually(
                lambda: execute(pg_dsn, runs.format(table(pg_schema, "runs")), (list(TERMINAL),))[0][0] == 0,
                DRAIN_TIMEOUT, 0.25,
            )  # fmt: skip
        except AssertionError:
            raise AssertionError(
                f"tick runs did not all end within {DRAIN_TIMEOUT} s\n{_stderr(tmp_path)}"
            ) from None
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in workers]

    created = execute(pg_dsn, sql.SQL("SELECT created_at FROM {} WHERE id = %s").format(
        table(pg_schema, "schedules")), (SCHEDULE_ID,))[0][0]  # fmt: skip
    rows = execute(pg_dsn, sql.SQL(TICK_RUNS).format(
        executions=table(pg_schema, "executions"), runs=table(pg_schema, "runs"),
        fired=table(pg_schema, "fired")))  # fmt: skip
    by_tick: dict[datetime, list[tuple[Any, ...]]] = collections.defaultdict(list)
    bad_keys = [row[1] for row in rows if _tick(row[1]) is None]
    for row in rows:
        if (tick := _tick(row[1])) is not None:
            by_tick[tick].append(row)
    ticks = sorted(by_tick)
    first, last = (ticks[0], ticks[-1]) if ticks else (None, None)
    missing = [] if first is None or last is None else [
        first + n * SECOND for n in range(int((last - first) / SECOND) + 1) if first + n * SECOND not in by_tick
    ]  # fmt: skip
    doubled = {t.isoformat(): len(rs) for t, rs in by_tick.items() if len(rs) != 1}
    executions = {t.isoformat(): rs[0][6] for t, rs in by_tick.items() if rs[0][6] != 1}
    lateness = {tick: (rs[0][3] - tick).total_seconds() for tick, rs in by_tick.items()}
    insert_lateness = [(rs[0][5] - tick).total_seconds() for tick, rs in by_tick.items() if rs[0][5]]
    firers = collections.Counter(rs[0][4] for rs in by_tick.values())
    executors = collections.Counter(rs[0][7] for rs in by_tick.values())
    statuses = collections.Counter(rs[0][2] for rs in by_tick.values())
    worst = max(lateness.values(), default=0.0)
    print(
        f"\nschedules: {WORKERS} workers fire '* * * * * *' for {SCHEDULE_FOR:g} s: {len(ticks)} ticks "
        f"{first and first.time()}..{last and last.time()}, {len(rows)} runs {dict(statuses)}, "
        f"{len(missing)} missing, {len(doubled)} doubled; lateness (created_at - tick) max {worst:.3f} s, "
        f"median {sorted(lateness.values())[len(lateness) // 2] if lateness else 0:.3f} s (inserted: max "
        f"{max(insert_lateness, default=0):.3f} s); fired by {dict(sorted(firers.items()))}, executed by "
        f"{dict(sorted(executors.items()))}"
    )

    assert codes == [0] * WORKERS, f"graceful stop: {codes}\n{_stderr(tmp_path)}"
    assert not bad_keys, bad_keys
    assert len(ticks) >= MIN_TICKS, f"only {len(ticks)} ticks fired in {SCHEDULE_FOR} s\n{_stderr(tmp_path)}"
    assert not doubled, doubled  # one run per tick (the key's unique index makes this certain)
    assert not missing, [t.isoformat() for t in missing]  # every tick between the first and the last
    assert executions == {}, executions  # each tick run's step executed exactly once
    assert statuses == {"completed": len(ticks)}, statuses
    assert all(rs[0][7] is not None for rs in by_tick.values())
    # nothing missed at either end: the first tick is the first after the schedule was created (by the
    # first process to start), and every tick more than LATENESS before the pause fired
    assert first is not None and last is not None
    assert first <= created.replace(microsecond=0) + SECOND, (first, created)
    assert last >= (window_end - timedelta(seconds=LATENESS)).replace(microsecond=0), (last, window_end)
    assert info.last_tick_at == last and info.last_run_id == by_tick[last][0][0], info
    # started within 2 s of the tick, and never before it
    assert min(lateness.values()) >= 0, {t.isoformat(): s for t, s in lateness.items() if s < 0}
    assert worst <= LATENESS, {t.isoformat(): s for t, s in lateness.items() if s > LATENESS}
    # each tick run was inserted by one of the three processes (which one wins a tick is not specified)
    assert set(firers) <= {f"pgflow-{name}" for name in names}, firers
