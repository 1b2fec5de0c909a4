"""Concurrency limits hold across worker processes (SPEC §16 "Concurrency limits").

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
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def _spawn(dsn: str, schema: str, stderr: Path) -> subprocess.Popen[str]:
    """A worker process (stderr to a file: a pipe nobody reads could fill up and block it); it imports
    this checkout's pgflow when this process does (PYTHONPATH is kept, tests/ put in front)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with open(stderr, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "procs.flow_worker", dsn, schema, str(THREADS), str(PAUSE)],
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
            workers.append(_spawn(pg_dsn, pg_schema, tmp_path / f"worker-{len(workers)}.err"))
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
