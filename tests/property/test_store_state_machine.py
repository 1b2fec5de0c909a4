"""MemoryStore and PostgresStore, driven side by side by one Hypothesis state machine (DESIGN §"One
contract suite, two stores").

Every rule applies the SAME operation, with the same explicit ``now`` (a simulated clock the rules
advance), to both stores and checks that they answer alike (values, or the same error). After every
rule an invariant compares everything they report: each run's row and step records, mailboxes,
consumed events, the full run listing and ``next_due``, and every schedule (SPEC §16), the listing
and ``next_schedule_tick``. Run ids are chosen by the test — tick runs too: ``fire_schedules`` takes
its ids from the stores' ``_new_id`` seam, which the test replaces with the same sequence for both —
so nothing may legitimately differ. Postgres uses ONE migrated schema for the whole module, truncated
(with sequences reset) at the start of each example.

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
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from psycopg_pool import ConnectionPool

import pgflow.memory
import pgflow.postgres.schedules
from async_bridge import BlockingBridge
from pgflow.memory import MemoryStore
from pgflow.postgres import PostgresStore
from pgflow.records import TERMINAL, RunError, RunStatus, StepRecord, Waiting
from pgflow.schedules import CATCH_UP, ON_TIME, new_row, tick_key
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
LEASE = pendulum.duration(seconds=30)
WORKFLOWS = ("wf-a", "wf-b")
RESOURCES = (None, "u1", "u2")
OWNERS = ("w1", "w2")
STEP_IDS = ("s1", "s2")
EVENTS = ("go", "stop")
KEYS = ("k1", "k2")
CONCURRENCY_KEYS = (None, "a", "b")
PRIORITIES = (-5, 0, 0, 3)
KINDS = ("run", "wait_for", "delay", "wait_until", "pause", "poll", "child")
OFFSETS = (-5, 0, 1, 5, 30, 45, 100)  # seconds relative to the simulated now
ACTIONS = ("pause", "resume", "cancel", "fast_forward")
STATUSES = tuple(s.value for s in RunStatus)
PREFIXES = st.sampled_from("abz")  # run ids are PREFIX + counter: id order is not creation order
SCOPES = st.sampled_from(["none", "none", "own", "own", "other", "ghost"])
SCHEDULE_IDS = ("s1", "s2", "S3")  # "S3" sorts first in byte order
# every 30 s (six fields, seconds first), every minute, every 5 minutes, hourly, weekdays at 09:30
CRONS = ("*/30 * * * * *", "* * * * *", "*/5 * * * *", "0 * * * *", "30 9 * * 1-5")
ZONES = ("UTC", "Europe/Paris", "Asia/Kolkata")  # Kolkata: +05:30, so its hours tick at :30 UTC
FIRE_LIMITS = st.sampled_from([1, 2, 10])  # schedules fired at most per call (more: FireResult.more)

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


# -- tick run ids ------------------------------------------------------------------------------------


class TickIds:
    """The ids ``fire_schedules`` gives tick runs, in both stores (their ``_new_id`` seam, replaced by
    the ``tick_ids`` fixture): the ``source`` a machine sets for one call — the same sequence for each
    store — else random ones."""

    source: Iterator[str] | None = None

    def __call__(self) -> str:
        return next(self.source) if self.source is not None else str(uuid.uuid4())


TICK_IDS = TickIds()


@pytest.fixture(autouse=True)
def tick_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both stores (and the asyncio one, which runs postgres/schedules.py too) take tick run ids from
    TICK_IDS."""
    monkeypatch.setattr(pgflow.memory, "_new_id", TICK_IDS)
    monkeypatch.setattr(pgflow.postgres.schedules, "_new_id", TICK_IDS)


# -- comparing ---------------------------------------------------------------------------------------


def _call(fn: Callable[[Store], Any], store: Store) -> tuple[str, Any]:
    try:
        return "ok", fn(store)
    except Exception as exc:  # both stores must raise the same error with the same message
        return "raised", (type(exc).__name__, str(exc))


def _describe(a: Any, b: Any) -> str:
    """Where two values differ: attrs values field by field, sequences element by element."""
    if attrs.has(type(a)) and type(a) is type(b):
        return "; ".join(
            f"{f.name}: memory={getattr(a, f.name)!r} postgres={getattr(b, f.name)!r}"
            for f in attrs.fields(type(a))
            if _normal(getattr(a, f.name)) != _normal(getattr(b, f.name))
        )
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return "; ".join(
            f"[{i}] {_describe(x, y)}"
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            if _normal(x) != _normal(y)
        )
    return f"memory={a!r} postgres={b!r}"


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
    """Both stores answered alike: equal values (in the same order), or the same error and message."""
    if _normal(mem) != _normal(pg):
        raise AssertionError(f"{what} differs: {_describe(mem, pg)}")


# -- the machine -------------------------------------------------------------------------------------


class StoreMachine(RuleBasedStateMachine):
    """Applies each operation to both stores and compares their answers and their whole state."""

    pool: ConnectionPool[Any]
    schema: str
    # the Postgres store to compare with memory: the blocking one by default; the asyncio one through
    # a BlockingBridge (the same SQL generators, run by the other executor)
    make_pg: Callable[[StoreMachine], Any] = staticmethod(lambda m: PostgresStore(m.pool, schema=m.schema))

    runs = Bundle("runs")
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        ident = sql.Identifier(self.schema)
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL(
                    "TRUNCATE {s}.runs, {s}.steps, {s}.events, {s}.workflows, {s}.schedules"
                    " RESTART IDENTITY CASCADE"
                ).format(s=ident)
            )
        self.mem = MemoryStore()
        self.pg = self.make_pg(self)
        self.now = T0
        self._ids = itertools.count()

    # helpers ---------------------------------------------------------------------------------------

    def both(self, what: str, fn: Callable[[Store], Any]) -> tuple[str, Any]:
        """Run ``fn`` on both stores, assert they answered alike, return the memory store's answer."""
        mem, pg = _call(fn, self.mem), _call(fn, self.pg)
        assert_same(what, mem, pg)
        return mem

    def new_id(self, prefix: str) -> str:
        """A fresh run id; the random prefix makes id order differ from creation order."""
        return f"{prefix}{next(self._ids):02d}"

    def row(self, run_id: str) -> RunRow:
        """A run as the memory store has it (to build the next operation from)."""
        return self.mem.get(run_id, None)[0]

    def all_runs(self) -> list[RunRow]:
        """Every run (as the memory store has it; the invariant keeps Postgres equal)."""
        return self.mem.list_runs(RunQuery(limit=10_000))[0]

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
                    self.new_id(data.draw(PREFIXES)),
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
        """Every outcome kind; a suspend sees the current mailbox_seq, or a stale one."""
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
        """Commit a random batch with ``lease`` on both; the children it started, if it was written."""
        batch = self.draw_batch(data, self.row(lease.run_id))
        duration = data.draw(durations, label="lease")
        kind, result = self.both("commit", lambda s: s.commit(lease, self.now, duration, batch))
        ok = kind == "ok" and result.ok
        return multiple(*[c.run.id for c in batch.children]) if ok else multiple()

    @initialize(
        target=runs, wf=st.sampled_from(WORKFLOWS), ids=st.lists(st.sampled_from(STEP_IDS), unique=True),
        retries=st.integers(0, 3), resources=st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=4),
    )  # fmt: skip
    def setup(self, wf: str, ids: list[str], retries: int, resources: list[str | None]) -> Any:
        """Register a workflow twice (the second replaces the first; both read back alike), then
        start a few plain runs so that every example has something to work on."""
        steps = [StepInfo(i, "run", loop=n % 2 == 1) for n, i in enumerate(ids)]
        for shown, extra in ((steps[:1], {}), (steps, {"retries": retries})):
            self.both(
                "register_workflow",
                lambda s, shown=shown, extra=extra: s.register_workflow(wf, shown, self.now, extra),
            )
            self.both("workflow_steps", lambda s: (s.workflow_steps(wf), s.workflow_settings(wf)))
        self.both("workflow_steps", lambda s: (s.workflow_steps("nope"), s.workflow_settings("nope")))
        started = []
        for n, resource in enumerate(resources):
            new = NewRun(
                self.new_id("i"), WORKFLOWS[n % 2], resource, {"n": n}, n % 3, 1.0, None, None, self.now
            )
            self.both("start_run", lambda s, new=new: s.start_run(new))
            started.append(new.id)
        return multiple(*started)

    @initialize(
        schedules=st.lists(
            st.tuples(
                st.sampled_from(SCHEDULE_IDS), st.sampled_from(WORKFLOWS), st.sampled_from(CRONS),
                st.sampled_from(ZONES), json_values, st.sampled_from(CATCH_UP),
            ),
            max_size=3,
        ),
    )  # fmt: skip
    def setup_schedules(self, schedules: list[tuple[Any, ...]]) -> None:
        """Create a few schedules (a later one of the same id replaces an earlier one), so that most
        examples have ticks coming due."""
        for params in schedules:
            self.put_schedule(*params)

    # client side -----------------------------------------------------------------------------------

    @rule(
        target=runs, prefix=PREFIXES, wf=st.sampled_from(WORKFLOWS), resource=st.sampled_from(RESOURCES),
        key=st.none() | st.sampled_from(KEYS), value=json_values, retries=st.integers(0, 2),
        backoff=st.sampled_from([0.5, 1.0, 2.0]), timeout=st.none() | st.sampled_from([5, 40, 200]),
        priority=st.sampled_from(PRIORITIES), concurrency_key=st.sampled_from(CONCURRENCY_KEYS),
    )  # fmt: skip
    def start_run(
        self, prefix: str, wf: str, resource: str | None, key: str | None, value: Any, retries: int,
        backoff: float, timeout: int | None, priority: int, concurrency_key: str | None,
    ) -> Any:  # fmt: skip
        """Start a run (maybe with an idempotency key that is taken, or conflicts; a priority and a
        concurrency key)."""
        timeout_at = self.now.add(seconds=timeout) if timeout is not None else None
        new = NewRun(self.new_id(prefix), wf, resource, value, retries, backoff, key, timeout_at, self.now,
                     priority=priority, concurrency_key=concurrency_key)  # fmt: skip
        kind, result = self.both("start_run", lambda s: s.start_run(new))
        return multiple(new.id) if kind == "ok" and result[1] else multiple()

    @rule(target=runs, parent=runs, step=st.sampled_from(STEP_IDS), prefix=PREFIXES, data=st.data())
    def start_linked_run(self, parent: str, step: str, prefix: str, data: st.DataObject) -> Any:
        """Start a run linked to a parent's step: mostly the step a waiting run waits at (so that
        parents often have several live children on one step), else any run and step."""
        waiting = [r for r in self.all_runs() if r.waiting is not None]
        if waiting and data.draw(st.integers(0, 3), label="at a waiting step?"):
            row = data.draw(st.sampled_from(waiting), label="parent")
            assert row.waiting is not None
            parent, step = row.id, row.waiting.step_id
        wf = data.draw(st.sampled_from(WORKFLOWS), label="workflow")
        new = NewRun(self.new_id(prefix), wf, None, None, 0, 1.0, None, None, self.now, parent, step)
        kind, result = self.both("start_run", lambda s: s.start_run(new))
        return multiple(new.id) if kind == "ok" and result[1] else multiple()

    @rule(run=runs, scope=SCOPES, event=st.sampled_from(EVENTS), value=json_values)
    def deliver_event(self, run: str, scope: str, event: str, value: Any) -> None:
        """Deliver an event (terminal, missing and foreign-resource runs must raise alike)."""
        run, resource = self.scoped(run, scope)
        self.both("deliver_event", lambda s: s.deliver_event(run, resource, event, value, self.now))

    @rule(run=runs, scope=SCOPES, action=st.sampled_from(ACTIONS), value=st.none() | json_values)
    def change(self, run: str, scope: str, action: str, value: Any) -> None:
        """Pause, resume, cancel or fast-forward (InvalidStateError / RunNotFoundError alike)."""
        run, resource = self.scoped(run, scope)
        self.both(action, lambda s: s.change(run, resource, action, value, self.now))

    @rule(run=runs, action=st.sampled_from(["pause", "resume"]))
    def hold_or_release(self, run: str, action: str) -> None:
        """Pause or resume (more often than cancel, so that held runs meet workers)."""
        self.both(action, lambda s: s.change(run, None, action, None, self.now))

    def parents(self) -> list[str]:
        """Live runs with live children."""
        rows = self.all_runs()
        live = {r.id for r in rows if r.status not in TERMINAL}
        return sorted({r.parent_run_id for r in rows if r.id in live and r.parent_run_id in live})

    @precondition(lambda self: bool(self.parents()))
    @rule(data=st.data())
    def cancel_parent(self, data: st.DataObject) -> None:
        """Cancel a run with live children: the cascade cancels them and settles its Child steps."""
        run = data.draw(st.sampled_from(self.parents()), label="parent")
        self.both("cancel", lambda s: s.change(run, None, "cancel", None, self.now))

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

    @rule(run=runs, scope=SCOPES, from_step=st.none() | st.sampled_from(STEP_IDS))
    def retry_run(self, run: str, scope: str, from_step: str | None) -> None:
        """Retry a run: revived alike, or refused alike (state, from_step, missing or foreign run)."""
        run, resource = self.scoped(run, scope)
        self.both("retry_run", lambda s: s.retry_run(run, resource, from_step, self.now))

    # worker side -----------------------------------------------------------------------------------

    @rule(
        wf=st.sampled_from(WORKFLOWS), concurrency=st.sampled_from([None, 1, 2]),
        key_concurrency=st.sampled_from([None, 1]), timeout=st.sampled_from([None, 40.0, 200.0]),
        backoff=st.sampled_from([1.0, 2.5]),
    )  # fmt: skip
    def set_limits(
        self, wf: str, concurrency: int | None, key_concurrency: int | None, timeout: float | None,
        backoff: float,
    ) -> None:  # fmt: skip
        """Register a workflow again, with (other) concurrency limits and run defaults (those of
        ``Workflow.settings``, which tick runs take). The keys are in jsonb's order (shorter first),
        the order Postgres gives them back in: settings are read by key, their order means nothing."""
        limits = {"retries": 1, "timeout": timeout, "concurrency": concurrency, "retry_backoff": backoff,
                  "key_concurrency": key_concurrency}  # fmt: skip
        self.both("register_workflow", lambda s: s.register_workflow(wf, [], self.now, limits))
        self.both("workflow_settings", lambda s: s.workflow_settings(wf))

    @rule(
        target=leases, owner=st.sampled_from(OWNERS),
        wfs=st.lists(st.sampled_from(WORKFLOWS), min_size=1, max_size=2, unique=True), limit=st.integers(1, 3),
        duration=durations, limited=st.booleans(),
    )  # fmt: skip
    def claim(
        self, owner: str, wfs: list[str], limit: int, duration: pendulum.Duration, limited: bool
    ) -> Any:
        """Claim ready runs and runs with expired leases: the same runs, in the same order; the
        ``limited`` way (the worker's definitions have limits) admits and parks under the limits."""
        chosen = wfs if limited else []
        kind, claimed = self.both("claim", lambda s: s.claim(owner, wfs, self.now, duration, limit, chosen))
        return multiple(*[c.lease for c in claimed]) if kind == "ok" else multiple()

    @rule(
        target=runs,
        owner=st.sampled_from(OWNERS),
        limit=st.integers(1, 3),
        duration=durations,
        data=st.data(),
    )
    def work(self, owner: str, limit: int, duration: pendulum.Duration, data: st.DataObject) -> Any:
        """A worker's round: fire the due schedules (mostly: as a worker does first), claim (the
        limited way or not), then commit a random batch for each claimed run (or drop it)."""
        fired = []
        if data.draw(st.integers(0, 3), label="fire?"):
            fired = self.fire(data.draw(PREFIXES), ON_TIME, data.draw(FIRE_LIMITS, label="fire limit")).values
        chosen = list(WORKFLOWS) if data.draw(st.booleans(), label="limited?") else []
        kind, claimed = self.both(
            "claim", lambda s: s.claim(owner, WORKFLOWS, self.now, duration, limit, chosen)
        )
        children = list(fired)
        for c in claimed if kind == "ok" else []:
            if data.draw(st.integers(0, 4), label="commit?"):
                children.extend(self.commit(c.lease, data).values)
        return multiple(*children)

    @rule(target=runs, lease=leases, data=st.data())
    def commit_with_any_lease(self, lease: Lease, data: st.DataObject) -> Any:
        """Commit a random batch with any lease ever handed out (often stale: a zombie worker)."""
        return self.commit(lease, data)

    def leased(self) -> list[RunRow]:
        """Runs some worker holds a lease on (maybe expired)."""
        return [r for r in self.all_runs() if r.lease_owner is not None]

    @precondition(lambda self: bool(self.leased()))
    @rule(target=runs, data=st.data(), forge=st.sampled_from(["no", "no", "no", "owner", "token"]))
    def commit_with_current_lease(self, data: st.DataObject, forge: str) -> Any:
        """Commit a random batch with a run's current lease (valid unless it expired), or with that
        lease forged (another owner, or the previous token): refused alike."""
        run = data.draw(st.sampled_from(self.leased()), label="run")
        owner = "intruder" if forge == "owner" else run.lease_owner or ""
        return self.commit(Lease(run.id, owner, run.lease_token - (forge == "token")), data)

    @precondition(lambda self: bool(self.leased()))
    @rule(
        target=runs,
        data=st.data(),
        step=st.sampled_from(STEP_IDS),
        prefix=PREFIXES,
        wf=st.sampled_from(WORKFLOWS),
    )
    def spawn_child(self, data: st.DataObject, step: str, prefix: str, wf: str) -> Any:
        """A Child step as the processor records it: start the child and suspend waiting for it."""
        run = data.draw(st.sampled_from(self.leased()), label="run")
        lease = Lease(run.id, run.lease_owner or "", run.lease_token)
        child = NewRun(self.new_id(prefix), wf, None, None, 0, 1.0, None, None, self.now, run.id, step)
        batch = Batch(
            (StepRecord(step, "child", "waiting", {"child_run_id": child.id}, started_at=self.now, attempts=1),),
            outcome=SuspendRun(Waiting(step, "child"), None, run.mailbox_seq),
            children=(StartChild(child),),
        )  # fmt: skip
        kind, result = self.both("commit", lambda s: s.commit(lease, self.now, LEASE, batch))
        return multiple(child.id) if kind == "ok" and result.ok else multiple()

    @rule(leases=st.lists(leases, min_size=1, max_size=3), duration=durations)
    def heartbeat(self, leases: list[Lease], duration: pendulum.Duration) -> None:
        """Extend leases: the same ones are reported lost."""
        self.both("heartbeat", lambda s: s.heartbeat(leases, self.now, duration))

    @rule(lease=leases)
    def reload(self, lease: Lease) -> None:
        """Reload a claimed run: the same row, steps and mailbox (or None for a lost lease)."""
        self.both("reload", lambda s: s.reload(lease))

    # schedules (SPEC §16) ----------------------------------------------------------------------------

    @rule(
        sid=st.sampled_from(SCHEDULE_IDS), wf=st.sampled_from(WORKFLOWS), cron=st.sampled_from(CRONS),
        zone=st.sampled_from(ZONES), value=json_values, catch_up=st.sampled_from(CATCH_UP),
    )  # fmt: skip
    def put_schedule(self, sid: str, wf: str, cron: str, zone: str, value: Any, catch_up: Any) -> None:
        """Create or replace a schedule, built as the client builds it (``schedules.new_row`` at now):
        replaced with the same cron and zone it keeps its place, else starts afresh; paused, it stays
        paused."""
        row = new_row(sid, wf, cron, zone, value, catch_up, self.now)
        self.both("put_schedule", lambda s: s.put_schedule(row))

    def on_schedule(self, what: str, sid: str, fn: Callable[[Store], Any]) -> None:
        """Change a schedule on both stores; a missing one raises ScheduleNotFoundError on both."""
        missing = self.mem.get_schedule(sid) is None
        kind, answer = self.both(what, fn)
        if missing:
            assert (kind, answer[0]) == ("raised", "ScheduleNotFoundError"), (kind, answer)

    @rule(sid=st.sampled_from((*SCHEDULE_IDS, "ghost")), pause=st.booleans())
    def pause_schedule(self, sid: str, pause: bool) -> None:
        """Pause or resume a schedule (resuming an active one, or pausing a paused one, changes
        nothing)."""
        self.on_schedule("set_schedule_paused", sid, lambda s: s.set_schedule_paused(sid, pause, self.now))

    @rule(sid=st.sampled_from((*SCHEDULE_IDS, "ghost")))
    def delete_schedule(self, sid: str) -> None:
        """Delete a schedule; its runs stay."""
        self.on_schedule("delete_schedule", sid, lambda s: s.delete_schedule(sid))

    def fire(self, prefix: str, on_time: pendulum.Duration, limit: int) -> Any:
        """Fire the due schedules on both stores, giving their tick runs the same ids on each
        (``{prefix}{counter}t{n}``); the runs started."""
        base = self.new_id(prefix)

        def fire_on(store: Store) -> Any:
            TICK_IDS.source = (f"{base}t{n}" for n in itertools.count())
            try:
                return store.fire_schedules(self.now, on_time, limit)
            finally:
                TICK_IDS.source = None

        kind, fired = self.both("fire_schedules", fire_on)
        return multiple(*fired.started) if kind == "ok" else multiple()

    @rule(
        target=runs, prefix=PREFIXES, on_time=st.sampled_from([ON_TIME, ON_TIME, pendulum.duration(0)]),
        limit=FIRE_LIMITS,
    )  # fmt: skip
    def fire_schedules(self, prefix: str, on_time: pendulum.Duration, limit: int) -> Any:
        """A worker fires the due schedules at now (up to ``limit``): the same tick runs, the same
        FireResult (started, more, next tick), the same rows afterwards."""
        return self.fire(prefix, on_time, limit)

    @precondition(lambda self: self.mem.next_schedule_tick() is not None)
    @rule(
        target=runs, late=st.sampled_from([0, 0, 1, 10, 11, 90, 600]), fire=st.booleans(), prefix=PREFIXES,
        limit=FIRE_LIMITS,
    )  # fmt: skip
    def advance_to_next_tick(self, late: int, fire: bool, prefix: str, limit: int) -> Any:
        """Move the clock to the next tick of the active schedules, or ``late`` seconds after it (on
        time up to ON_TIME, missed beyond: catch_up decides), then maybe fire at once. The next tick
        of frequent schedules is near, so a far tick (hourly, daily) comes only while none is active:
        ticks to start stay few."""
        tick = self.mem.next_schedule_tick()
        assert tick is not None
        self.now = max(self.now, tick.add(seconds=late))
        return self.fire(prefix, ON_TIME, limit) if fire else multiple()

    def ticking(self) -> list[Any]:
        """The active schedules (as the memory store has them)."""
        return [r for r in self.mem.list_schedules() if r.next_tick_at is not None]

    @precondition(lambda self: bool(self.ticking()))
    @rule(target=runs, data=st.data(), prefix=PREFIXES, wf=st.sampled_from(WORKFLOWS))
    def take_a_tick_key(self, data: st.DataObject, prefix: str, wf: str) -> Any:
        """Start a run holding the idempotency key of a schedule's next tick: when the tick fires it
        starts nothing more, and the schedule's last run is the holder."""
        row = data.draw(st.sampled_from(self.ticking()), label="schedule")
        assert row.next_tick_at is not None
        key = tick_key(row.schedule_id, row.next_tick_at)
        new = NewRun(self.new_id(prefix), wf, None, row.input, 0, 1.0, key, None, self.now)
        kind, result = self.both("start_run", lambda s: s.start_run(new))
        return multiple(new.id) if kind == "ok" and result[1] else multiple()

    # time ------------------------------------------------------------------------------------------

    @rule(target=runs, seconds=st.sampled_from([1, 5, 10, 29, 30, 31, 60, 120]), fire=st.booleans(),
          prefix=PREFIXES, limit=FIRE_LIMITS)  # fmt: skip
    def advance(self, seconds: int, fire: bool, prefix: str, limit: int) -> Any:
        """Move the simulated clock forward (past lease expiries, timers, timeouts, schedule ticks),
        then maybe fire the ticks that came due meanwhile."""
        self.now = self.now.add(seconds=seconds)
        return self.fire(prefix, ON_TIME, limit) if fire else multiple()

    @rule()
    def advance_to_next_due(self) -> None:
        """Move the clock exactly to the next due time, to hit the boundaries (due == now)."""
        due = self.mem.next_due(WORKFLOWS)
        if due is not None and due > self.now:
            self.now = due

    # comparing the whole state ---------------------------------------------------------------------

    def compare_run(self, run_id: str) -> None:
        """One run's row, step records (in order), mailbox and consumed events agree."""
        kind, _ = self.both(f"get({run_id})", lambda s: s.get(run_id, None))
        if kind == "ok":
            self.both(f"mailbox({run_id})", lambda s: s.mailbox(run_id))  # type: ignore[attr-defined]
            self.both(f"consumed_events({run_id})", lambda s: s.consumed_events(run_id))  # type: ignore[attr-defined]

    @invariant()
    def same_state(self) -> None:
        """Every run, its steps, mailbox and consumed events, the listing and next_due agree; so do
        every schedule, their listing and the next tick."""
        for row in self.all_runs():  # a run only Postgres has: see list_runs
            self.compare_run(row.id)
        self.both("list_runs", lambda s: s.list_runs(RunQuery(limit=10_000)))
        self.both("next_due", lambda s: (s.next_due(WORKFLOWS), s.next_due(WORKFLOWS[:1])))
        kind, (listed, _) = self.both("schedules", lambda s: (s.list_schedules(), s.next_schedule_tick()))
        assert kind == "ok", listed
        ids = [r.schedule_id for r in listed]  # a schedule only Postgres has: see the listing
        missing = [sid for sid in SCHEDULE_IDS if sid not in ids][:1]  # one id no schedule has
        for sid in ids + missing:
            self.both(f"get_schedule({sid})", lambda s, sid=sid: s.get_schedule(sid))


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


def test_memory_and_asyncio_postgres_stores_agree(
    machine_env: tuple[ConnectionPool[Any], str], pg_server_dsn: str
) -> None:
    """The same machine against the asyncio store (AsyncPostgresStore on its own loop): the asyncio
    executor performs the same operations as the blocking one."""
    pool, schema = machine_env
    bridge = BlockingBridge(pg_server_dsn, schema, max_size=2)
    try:
        machine = type(
            "BoundAsyncStoreMachine", (StoreMachine,),
            {"pool": pool, "schema": schema, "make_pg": staticmethod(lambda _m: bridge)},
        )  # fmt: skip
        run_state_machine_as_test(machine, settings=SETTINGS)
    finally:
        bridge.shutdown()


# -- divergences the machine found, pinned as plain sequences ----------------------------------------


def _bound(env: tuple[ConnectionPool[Any], str]) -> StoreMachine:
    pool, schema = env
    return type("BoundStoreMachine", (StoreMachine,), {"pool": pool, "schema": schema})()


def test_heartbeat_reports_a_stale_lease_of_a_run_heartbeated_with_its_current_one_too(
    machine_env: tuple[ConnectionPool[Any], str],
) -> None:
    """A stale lease is lost even when the same call also extends the run's current lease."""
    m = _bound(machine_env)
    m.both("start_run", lambda s: s.start_run(NewRun("a00", "wf-a", None, None, 0, 1.0, None, None, T0)))
    short = pendulum.duration(seconds=10)
    stale = m.both("claim", lambda s: s.claim("w1", ["wf-a"], T0, short, 1))[1][0].lease
    current = m.both("claim", lambda s: s.claim("w1", ["wf-a"], T0.add(seconds=10), short, 1))[1][0].lease
    _, lost = m.both("heartbeat", lambda s: s.heartbeat([current, stale], T0.add(seconds=10), short))
    assert lost == {"a00"}


def test_cancel_cascades_to_children_in_id_order(machine_env: tuple[ConnectionPool[Any], str]) -> None:
    """Children are cancelled in id order; the Child step is settled by the child it waits for."""
    m = _bound(machine_env)
    m.both("start_run", lambda s: s.start_run(NewRun("i00", "wf-a", None, None, 0, 1.0, None, None, T0)))
    lease = m.both("claim", lambda s: s.claim("w1", ["wf-a"], T0, LEASE, 1))[1][0].lease
    for child_id in ("b01", "a02"):  # created in this order, cancelled in id order
        child = StartChild(NewRun(child_id, "wf-a", None, None, 0, 1.0, None, None, T0, "i00", "s1"))
        waiting = StepRecord("s1", "child", "waiting", {"child_run_id": child_id}, started_at=T0)
        batch = Batch((waiting,) if child_id == "b01" else (), outcome=KeepRunning(), children=(child,))
        m.both("commit", lambda s, batch=batch: s.commit(lease, T0, LEASE, batch))
    m.both("cancel", lambda s: s.change("i00", None, "cancel", None, T0))
    _, (_, steps) = m.both("get", lambda s: s.get("i00", None))
    assert steps[0].error is not None and "child run b01 " in steps[0].error.message
