"""MemoryStore and PostgresStore, driven side by side by one Hypothesis state machine (DESIGN §"One
contract suite, two stores").

Every rule applies the SAME operation, with the same explicit ``now`` (a simulated clock the rules
advance), to both stores and checks that they answer alike (values, or the same error). After every
rule an invariant compares everything they report: each run's row and step records, mailboxes,
consumed events, the full run listing and ``next_due``. Run ids are chosen by the test, so nothing
may legitimately differ. Postgres uses ONE migrated schema for the whole module, truncated (with
sequences reset) at the start of each example.

Tuning: ``PGFLOW_SM_EXAMPLES`` / ``PGFLOW_SM_STEPS`` override the CI-sized defaults (50 × 30).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pendulum
import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from psycopg_pool import ConnectionPool

from pgflow.memory import MemoryStore
from pgflow.postgres import PostgresStore
from pgflow.records import RunError, RunStatus, StepRecord, Waiting
from pgflow.static_steps import StepInfo
from pgflow.store import (
    Batch,
    CompleteRun,
    FailRun,
    KeepRunning,
    Lease,
    NewRun,
    ReleaseRun,
    RetryRun,
    RunOutcome,
    RunQuery,
    RunRow,
    StartChild,
    Store,
    SuspendRun,
)

pytestmark = pytest.mark.postgres

T0 = pendulum.datetime(2024, 1, 1, tz="UTC")
WORKFLOWS = ("wf-a", "wf-b")
RESOURCES = (None, "u1", "u2")
OWNERS = ("w1", "w2")
STEP_IDS = ("s1", "s2", "s3")
EVENTS = ("go", "stop")
KEYS = ("k1", "k2")
KINDS = ("run", "wait_for", "delay", "wait_until", "pause", "poll", "child")
OFFSETS = (-5, 0, 1, 5, 30, 45, 100)  # seconds relative to the simulated now
ACTIONS = ("pause", "resume", "cancel", "fast_forward")
STATUSES = tuple(s.value for s in RunStatus)
SCOPES = st.sampled_from(["none", "none", "own", "own", "other", "ghost"])

SETTINGS = settings(
    max_examples=int(os.environ.get("PGFLOW_SM_EXAMPLES", "50")),
    stateful_step_count=int(os.environ.get("PGFLOW_SM_STEPS", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


# -- strategies --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text("abcxyz ", max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text("abk", max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
durations = st.sampled_from([10, 30]).map(lambda s: pendulum.duration(seconds=s))
errors = st.builds(
    RunError,
    st.sampled_from(["ValueError", "StepFailedError", "WorkflowTimeoutError"]),
    st.text("abc ", max_size=8),
    st.none() | st.just("Traceback ..."),
    st.none() | st.sampled_from(STEP_IDS),
)


def at(now: pendulum.DateTime) -> st.SearchStrategy[pendulum.DateTime]:
    """A time near ``now`` (in the past, exactly now, or ahead)."""
    return st.sampled_from(OFFSETS).map(lambda s: now.add(seconds=s))


def step_records(now: pendulum.DateTime) -> st.SearchStrategy[StepRecord]:
    """Any step record a worker could write (ids from a small pool, so upserts replace records)."""
    return st.builds(
        StepRecord, step_id=st.sampled_from(STEP_IDS), kind=st.sampled_from(KINDS),
        status=st.sampled_from(["completed", "failed", "waiting"]), output=json_values,
        error=st.none() | errors, timed_out=st.booleans(), attempts=st.integers(0, 3), started_at=st.just(now),
        completed_at=st.none() | st.just(now), wake_at=st.none() | at(now), timeout_at=st.none() | at(now),
        event=st.none() | st.sampled_from(EVENTS), run_attempt=st.integers(0, 2),
    )  # fmt: skip


def waitings(now: pendulum.DateTime) -> st.SearchStrategy[Waiting]:
    """A Waiting of each kind: an event (maybe with a timeout), a timer, a pause or a child."""
    step = st.sampled_from(STEP_IDS)
    return st.one_of(
        st.builds(Waiting, step, st.just("wait_for"), st.sampled_from(EVENTS), st.none() | at(now)),
        st.builds(Waiting, step, st.sampled_from(["delay", "wait_until", "poll"]), st.none(), at(now)),
        st.builds(Waiting, step, st.sampled_from(["pause", "child"]), st.none(), st.none()),
    )


# -- comparing ---------------------------------------------------------------------------------------


def _call(fn: Callable[[Store], Any], store: Store) -> tuple[str, Any]:
    try:
        return "ok", fn(store)
    except Exception as exc:  # both stores must raise the same error with the same message
        return "raised", (type(exc).__name__, str(exc))


def _describe(a: Any, b: Any) -> str:
    """The fields where two values differ (attrs values field by field, else both reprs)."""
    if attrs.has(type(a)) and type(a) is type(b):
        return "; ".join(
            f"{f.name}: memory={getattr(a, f.name)!r} postgres={getattr(b, f.name)!r}"
            for f in attrs.fields(type(a))
            if getattr(a, f.name) != getattr(b, f.name)
        )
    return f"memory={a!r}\npostgres={b!r}"


def _normal(value: Any) -> Any:
    """A comparable form that also pins the order of step records in dicts."""
    if isinstance(value, dict):
        return [(k, _normal(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if attrs.has(type(value)):
        return (type(value).__name__, [_normal(getattr(value, f.name)) for f in attrs.fields(type(value))])
    return value


def assert_same(what: str, mem: tuple[str, Any], pg: tuple[str, Any]) -> None:
    if _normal(mem) == _normal(pg):
        return
    if mem[0] == pg[0] == "ok" and isinstance(mem[1], list) and isinstance(pg[1], list):
        details = [_describe(a, b) for a, b in zip(mem[1], pg[1], strict=False) if _normal(a) != _normal(b)]
        raise AssertionError(f"{what} differs: {details or _describe(mem, pg)}")
    raise AssertionError(f"{what} differs: {_describe(mem[1], pg[1])}")


# -- the machine -------------------------------------------------------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Applies each operation to both stores and compares their answers and their whole state."""

    pool: ConnectionPool[Any]
    schema: str

    runs = Bundle("runs")
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        ident = sql.Identifier(self.schema)
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "TRUNCATE {s}.runs, {s}.steps, {s}.events, {s}.workflows RESTART IDENTITY CASCADE"
                ).format(s=ident)
            )
        self.mem = MemoryStore()
        self.pg = PostgresStore(self.pool, schema=self.schema)
        self.now = T0
        self.known: list[str] = []  # every run id ever used (created or not)
        self._ids = itertools.count()

    # helpers ---------------------------------------------------------------------------------------

    def both(self, what: str, fn: Callable[[Store], Any]) -> tuple[str, Any]:
        """Run ``fn`` on both stores, assert they answered alike, return the memory store's answer."""
        mem, pg = _call(fn, self.mem), _call(fn, self.pg)
        assert_same(what, mem, pg)
        return mem

    def new_id(self, prefix: str) -> str:
        """A fresh run id; the random prefix makes id order differ from creation order."""
        run_id = f"{prefix}{next(self._ids):02d}"
        self.known.append(run_id)
        return run_id

    def row(self, run_id: str) -> RunRow:
        return self.mem.get(run_id, None)[0]

    def draw_batch(self, data: st.DataObject, run: RunRow) -> Batch:
        """A batch for ``run``: step records, consumed events, an outcome and child runs."""
        steps = data.draw(st.lists(step_records(self.now), max_size=3), label="steps")
        mailbox = self.mem.mailbox(run.id)
        ids = [ev.id for ev in mailbox] + [999]
        consumed = data.draw(
            st.lists(
                st.tuples(st.sampled_from(ids), st.sampled_from(STEP_IDS)),
                max_size=2,
                unique_by=lambda c: c[0],
            )
            if mailbox
            else st.just([]),
            label="consumed",
        )
        outcome = data.draw(self.outcomes(run), label="outcome")
        if isinstance(outcome, SuspendRun) and outcome.waiting is not None and data.draw(st.booleans()):
            w = outcome.waiting
            steps.append(
                StepRecord(
                    w.step_id, w.kind, "waiting", started_at=self.now, wake_at=w.wake_at, event=w.event
                )
            )
        children = tuple(
            StartChild(
                NewRun(
                    self.new_id("c"),
                    data.draw(st.sampled_from(WORKFLOWS)),
                    data.draw(st.sampled_from(RESOURCES)),
                    data.draw(json_values),
                    data.draw(st.integers(0, 2)),
                    1.0,
                    None,
                    data.draw(st.none() | at(self.now)),
                    self.now,
                    parent_run_id=run.id,
                    parent_step_id=data.draw(st.sampled_from(STEP_IDS)),
                )
            )
            for _ in range(data.draw(st.integers(0, 2), label="children"))
        )
        return Batch(tuple(steps), tuple(consumed), outcome, children)

    def outcomes(self, run: RunRow) -> st.SearchStrategy[RunOutcome]:
        seen = st.sampled_from([run.mailbox_seq, run.mailbox_seq, run.mailbox_seq - 1])  # stale sometimes
        suspend = st.builds(
            lambda w, wake, s: SuspendRun(w, w.wake_at if w is not None else wake, s),
            st.none() | waitings(self.now), st.none() | at(self.now), seen,
        )  # fmt: skip
        return st.one_of(
            st.just(KeepRunning()),
            suspend,
            st.builds(CompleteRun, json_values),
            st.builds(FailRun, errors),
            st.builds(RetryRun, errors, at(self.now)),
            st.just(ReleaseRun()),
        )

    def commit(self, lease: Lease, data: st.DataObject) -> Any:
        batch = self.draw_batch(data, self.row(lease.run_id))
        duration = data.draw(durations, label="lease")
        kind, result = self.both("commit", lambda s: s.commit(lease, self.now, duration, batch))
        ok = kind == "ok" and result.ok
        return multiple(*[c.run.id for c in batch.children]) if ok else multiple()

    # client side -----------------------------------------------------------------------------------

    @rule(
        target=runs, prefix=st.sampled_from("abz"), wf=st.sampled_from(WORKFLOWS), resource=st.sampled_from(RESOURCES),
        key=st.none() | st.sampled_from(KEYS), value=json_values, retries=st.integers(0, 2),
        backoff=st.sampled_from([0.5, 1.0, 2.0]), timeout=st.none() | st.sampled_from([5, 40, 200]),
    )  # fmt: skip
    def start_run(
        self, prefix: str, wf: str, resource: str | None, key: str | None, value: Any, retries: int,
        backoff: float, timeout: int | None,
    ) -> Any:  # fmt: skip
        """Start a run (maybe with an idempotency key that is taken, or conflicts)."""
        timeout_at = self.now.add(seconds=timeout) if timeout is not None else None
        new = NewRun(self.new_id(prefix), wf, resource, value, retries, backoff, key, timeout_at, self.now)
        kind, result = self.both("start_run", lambda s: s.start_run(new))
        return multiple(new.id) if kind == "ok" and result[1] else multiple()

    @rule(target=runs, parent=runs, step=st.sampled_from(STEP_IDS), wf=st.sampled_from(WORKFLOWS))
    def start_linked_run(self, parent: str, step: str, wf: str) -> Any:
        """Start a run linked to a parent run's step (as a Child step does)."""
        new = NewRun(self.new_id("p"), wf, None, None, 0, 1.0, None, None, self.now, parent, step)
        kind, result = self.both("start_run", lambda s: s.start_run(new))
        return multiple(new.id) if kind == "ok" and result[1] else multiple()

    @rule(
        run=runs,
        scope=st.sampled_from(["none", "own", "other"]),
        event=st.sampled_from(EVENTS),
        value=json_values,
    )
    def deliver_event(self, run: str, scope: str, event: str, value: Any) -> None:
        """Deliver an event (terminal runs and foreign resources must raise alike)."""
        resource = self.scope(run, scope)
        self.both("deliver_event", lambda s: s.deliver_event(run, resource, event, value, self.now))

    @rule(
        run=runs,
        scope=st.sampled_from(["none", "own", "other"]),
        action=st.sampled_from(ACTIONS),
        value=json_values,
    )
    def change(self, run: str, scope: str, action: str, value: Any) -> None:
        """Pause, resume, cancel or fast-forward (InvalidStateError / RunNotFoundError alike)."""
        resource = self.scope(run, scope)
        self.both(action, lambda s: s.change(run, resource, action, value, self.now))

    def scoped(self, run: str, scope: str) -> tuple[str, str | None]:
        """The run id and resource to address it with: unscoped, its own, another's, or a missing run."""
        if scope == "ghost":
            return "ghost", None
        own = self.row(run).resource_id
        return run, {"none": None, "own": own, "other": "u2" if own == "u1" else "u1"}[scope]

    @rule(
        run=runs, cursor=st.sampled_from(["none", "after", "before", "ghost"]),
        resource=st.sampled_from(RESOURCES), wf=st.none() | st.sampled_from(WORKFLOWS),
        statuses=st.none() | st.lists(st.sampled_from(STATUSES), min_size=1, max_size=3, unique=True).map(tuple),
        limit=st.integers(1, 4),
    )  # fmt: skip
    def list_runs(
        self, run: str, cursor: str, resource: str | None, wf: str | None, statuses: Any, limit: int
    ) -> None:
        """A filtered page of runs, maybe after/before a cursor (unknown cursors raise alike)."""
        target = "ghost" if cursor == "ghost" else run
        query = RunQuery(
            resource, wf, statuses, limit,
            starting_after=target if cursor in ("after", "ghost") else None,
            ending_before=target if cursor == "before" else None,
        )  # fmt: skip
        self.both(f"list_runs({query})", lambda s: s.list_runs(query))

    @rule(
        wf=st.sampled_from(WORKFLOWS),
        ids=st.lists(st.sampled_from(STEP_IDS), unique=True),
        retries=st.integers(0, 3),
    )
    def register_workflow(self, wf: str, ids: list[str], retries: int) -> None:
        """(Re-)register a workflow; its steps and settings read back alike."""
        steps = [StepInfo(i, "run", loop=n % 2 == 1) for n, i in enumerate(ids)]
        self.both(
            "register_workflow", lambda s: s.register_workflow(wf, steps, self.now, {"retries": retries})
        )
        self.both(
            "workflow_steps", lambda s: (s.workflow_steps(wf), s.workflow_settings(wf), s.workflow_steps("x"))
        )

    # worker side -----------------------------------------------------------------------------------

    @rule(
        target=leases, owner=st.sampled_from(OWNERS),
        wfs=st.lists(st.sampled_from(WORKFLOWS), min_size=1, max_size=2, unique=True), limit=st.integers(1, 3),
        duration=durations,
    )  # fmt: skip
    def claim(self, owner: str, wfs: list[str], limit: int, duration: pendulum.Duration) -> Any:
        """Claim ready runs and runs with expired leases: the same runs, in the same order."""
        kind, claimed = self.both("claim", lambda s: s.claim(owner, wfs, self.now, duration, limit))
        return multiple(*[c.lease for c in claimed]) if kind == "ok" else multiple()

    @rule(
        target=runs,
        owner=st.sampled_from(OWNERS),
        limit=st.integers(1, 3),
        duration=durations,
        data=st.data(),
    )
    def work(self, owner: str, limit: int, duration: pendulum.Duration, data: st.DataObject) -> Any:
        """A worker's round: claim, then commit a random batch for each claimed run (or drop it)."""
        kind, claimed = self.both("claim", lambda s: s.claim(owner, WORKFLOWS, self.now, duration, limit))
        children = []
        for c in claimed if kind == "ok" else []:
            if data.draw(st.integers(0, 4), label="commit?"):
                children.extend(self.commit(c.lease, data).values)
        return multiple(*children)

    @rule(target=runs, lease=leases, data=st.data())
    def commit_with_any_lease(self, lease: Lease, data: st.DataObject) -> Any:
        """Commit a random batch with any lease ever handed out (often stale: a zombie worker)."""
        return self.commit(lease, data)

    def leased(self) -> list[RunRow]:
        return [r for r in self.mem.list_runs(RunQuery(limit=1000))[0] if r.lease_owner is not None]

    @precondition(lambda self: bool(self.leased()))
    @rule(target=runs, data=st.data(), forge=st.sampled_from(["no", "no", "no", "owner", "token"]))
    def commit_with_current_lease(self, data: st.DataObject, forge: str) -> Any:
        """Commit a random batch with a run's current lease (valid unless it expired), or with that
        lease forged (another owner, or the previous token): refused alike."""
        run = data.draw(st.sampled_from(self.leased()), label="run")
        owner = "intruder" if forge == "owner" else run.lease_owner or ""
        return self.commit(Lease(run.id, owner, run.lease_token - (forge == "token")), data)

    @rule(leases=st.lists(leases, min_size=1, max_size=3), duration=durations)
    def heartbeat(self, leases: list[Lease], duration: pendulum.Duration) -> None:
        """Extend leases: the same ones are reported lost."""
        self.both("heartbeat", lambda s: s.heartbeat(leases, self.now, duration))

    @rule(lease=leases)
    def reload(self, lease: Lease) -> None:
        """Reload a claimed run: the same row, steps and mailbox (or None for a lost lease)."""
        self.both("reload", lambda s: s.reload(lease))

    # time ------------------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 5, 10, 29, 30, 31, 60, 120]))
    def advance(self, seconds: int) -> None:
        """Move the simulated clock forward (past lease expiries, timers, timeouts)."""
        self.now = self.now.add(seconds=seconds)

    @rule()
    def advance_to_next_due(self) -> None:
        """Move the clock exactly to the next due time, to hit the boundaries (due == now)."""
        due = self.mem.next_due(WORKFLOWS)
        if due is not None and due > self.now:
            self.now = due

    # comparing the whole state ---------------------------------------------------------------------

    def compare_run(self, run_id: str) -> None:
        kind, _ = self.both(f"get({run_id})", lambda s: s.get(run_id, None))
        if kind == "ok":
            self.both(f"mailbox({run_id})", lambda s: s.mailbox(run_id))  # type: ignore[attr-defined]
            self.both(f"consumed_events({run_id})", lambda s: s.consumed_events(run_id))  # type: ignore[attr-defined]

    @invariant()
    def same_state(self) -> None:
        """Every run, its steps, mailbox and consumed events, the listing and next_due agree."""
        for run_id in self.known:
            self.compare_run(run_id)
        self.both("list_runs", lambda s: s.list_runs(RunQuery(limit=100)))
        self.both("next_due", lambda s: (s.next_due(WORKFLOWS), s.next_due(WORKFLOWS[:1])))


# -- the test ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def machine_env(pg_server_dsn: str) -> Iterator[tuple[ConnectionPool[Any], str]]:
    """One pool and one migrated schema for every example of the module (truncated per example)."""
    schema = f"sm_{uuid.uuid4().hex[:12]}"
    with ConnectionPool(pg_server_dsn, min_size=1, max_size=2, open=True) as pool:
        PostgresStore(pool, schema=schema).migrate()
        yield pool, schema
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_memory_and_postgres_stores_agree(machine_env: tuple[ConnectionPool[Any], str]) -> None:
    """Random operation sequences leave MemoryStore and PostgresStore in the same observable state."""
    pool, schema = machine_env
    machine = type("BoundStoreMachine", (StoreMachine,), {"pool": pool, "schema": schema})
    run_state_machine_as_test(machine, settings=SETTINGS)
