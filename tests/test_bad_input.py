"""Bad input, always named (SPEC §13): every public client method and constructor, driven with
generated bad values, raises a named PgflowError (never StorageError) whose message is bounded and
names the argument, and stores nothing.

The strategies below are shared by every test: NUL characters, lone surrogates, 10,000-deep
nesting, wrong types, huge ints and durations, empty and over-long strings.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pendulum
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

import pgflow
from pgflow import (
    All,
    Child,
    Delay,
    Pause,
    Poll,
    Retry,
    Run,
    Schedule,
    Transaction,
    WaitFor,
    WaitUntil,
    parse_duration,
    workflow,
)
from pgflow.clock import SystemClock
from pgflow.errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidDurationError,
    InvalidInputError,
    PgflowError,
    StorageError,
    WorkflowDefinitionError,
)
from pgflow.testing import Harness, SimClock

MAX_MESSAGE = 600
DEPTH = 10_000
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- values that no argument accepts ------------------------------------------------------------------


class Deep(list):  # type: ignore[type-arg]
    """A list nested ``DEPTH`` levels deep (plain lists inside): its ``repr`` raises RecursionError,
    so Hypothesis is given a short description to report instead."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"<{DEPTH}-deep list>")


class DeepDict(dict):  # type: ignore[type-arg]
    """``{"days": {"days": ...}}``, ``DEPTH`` levels deep: a duration-looking mapping."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"<{DEPTH}-deep dict>")


def deep_list(levels: int = DEPTH, leaf: Any = 1) -> Deep:
    value = leaf
    for _ in range(levels - 1):
        value = [value]
    return Deep([value])


def deep_dict(levels: int = DEPTH) -> DeepDict:
    value: Any = {"days": 1}
    for _ in range(levels - 1):
        value = {"days": value}
    return DeepDict(days=value)


class Unprintable:
    """An object whose ``repr`` fails: a message must still show something."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Unprintable()")


def _with_char(char: str) -> st.SearchStrategy[str]:
    """Short text with ``char`` somewhere in it."""
    return st.tuples(st.text(max_size=8), st.text(max_size=8)).map(lambda p: p[0] + char + p[1])


def _unparseable(text: str) -> bool:
    try:
        parse_duration(text)
    except InvalidDurationError:
        return True
    return False


NUL = _with_char("\x00")
SURROGATE = st.integers(0xD800, 0xDFFF).flatmap(lambda c: _with_char(chr(c)))
OVER_LONG = st.integers(257, 100_000).map(lambda n: "x" * n)
DEEP = st.sampled_from([deep_list(), deep_dict(), deep_list(leaf="\x00")])
WRONG_TYPES = st.sampled_from([5, 1.5, True, b"id", object(), Unprintable(), [1], {"a": 1}, ("t",), math.nan])
HUGE_INTS = st.sampled_from([2**31, 2**63, 2**64, -(2**64), 10**100])

BAD_IDS = st.one_of(st.just(""), NUL, SURROGATE, OVER_LONG, WRONG_TYPES, HUGE_INTS, DEEP)
"""Never an id: ids are non-empty str of at most 256 characters, without NUL or lone surrogates."""

# fmt: off
UNPARSEABLE = st.one_of(
    st.sampled_from(
        [
            10**30,
            "1e400 s",
            1e400,
            math.nan,
            -1,
            0,
            "",
            "soon",
            "5 parsecs",
            True,
            [],
            object(),
            Unprintable(),
            "\x00",
            "\ud800s",
            "9" * 5000 + "s",
            {"days": 10**30},
            {"years": 1},
            timedelta(days=-1),
            pendulum.duration(days=-1),
        ]
    ),
    st.text(max_size=30).filter(_unparseable),
    DEEP,
    NUL,
    SURROGATE,
)
"""Not a positive duration at all (``parse_duration`` rejects these)."""

BAD_SPANS = st.one_of(
    UNPARSEABLE,
    st.sampled_from(["100000000 weeks", timedelta.max, {"weeks": 10**8}]),
    st.integers(3_652_059, 999_999_999).map(lambda days: timedelta(days=days)),
)
"""Not a usable duration anywhere: unparseable, or longer than the whole range of datetimes."""

BAD_TIMEOUTS = st.one_of(BAD_SPANS, st.integers(3_000_000, 3_652_058).map(lambda days: timedelta(days=days)))
"""Not usable from now (2026 or the harness's 2030): these also reach past year 9999 once added."""

BAD_WHENS = st.one_of(
    st.sampled_from(
        [
            "tomorrow-ish",
            "",
            "10:30",
            5,
            1.5,
            object(),
            Unprintable(),
            [T0],
            datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        ]  # past year 9999 in UTC
    ),
    NUL,
    SURROGATE,
    DEEP,
)
BAD_STATUSES = st.one_of(
    st.sampled_from(
        [
            5,
            1.5,
            object(),
            ["sleeping"],
            "sleeping",
            [5],
            [None],
            b"pending",
            {"pending": 1},
            "",
            [""],
            ["pending", 7],
            range(1000),
        ]
    ),
    DEEP,
    NUL.map(lambda s: [s]),
)
BAD_UNTIL = st.one_of(BAD_STATUSES, st.just(None), st.just([]))
BAD_LIMITS = st.one_of(
    st.sampled_from(["10", 1.5, True, None, [10], 2**63, -(2**63) - 1, 2**64, 10**100]), DEEP
)
BAD_RETRIES = st.one_of(st.sampled_from([-1, 2**31, 2**64, True, "3", 1.0, [1], math.inf]), DEEP)
BAD_DATA = st.one_of(
    st.sampled_from(
        [
            deep_list(),
            deep_list(900, math.nan),
            {"\x00": 1},
            {"k": "\x00"},
            "\ud800",
            {"\udfff": 1},
            math.nan,
            math.inf,
            object(),
            Unprintable(),
            {1.5: 2},
            10**5000,
            [object()],
            {"x" * 100_000: [math.inf]},
        ]
    ),
    NUL.map(lambda s: {"text": s}),
    SURROGATE.map(lambda s: [s]),
)
"""Never storable as JSON: too deep, NUL, lone surrogates, non-finite floats, foreign objects."""

BAD_SCHEMAS = st.one_of(BAD_IDS, st.sampled_from(["bad-schema", "1abc", "a" * 64, "drop table; --", "ü"]))
BAD_DSNS = st.one_of(st.sampled_from([5, b"host=x", ["x"], {"host": "x"}, 1.5, object()]), DEEP)
BAD_DSN_TEXTS = st.one_of(st.sampled_from(["not a dsn", "a=b", "host=x\x00"]), SURROGATE)
BAD_CLOCKS = st.sampled_from(
    [5, "clock", object(), Unprintable(), type("NowIsNotCallable", (), {"now": 5})()]
)
BAD_POOLS = st.one_of(st.sampled_from([5, "pool", object(), {"min_size": 1}]), DEEP)
BAD_WORKFLOWS = st.one_of(st.sampled_from([5, "abc", [5], [object()], [None], object()]), DEEP)
BAD_CONCURRENCY = st.one_of(st.sampled_from([0, -1, 10_001, 2**64, True, "4", 1.5, None]), DEEP)
NOT_CALLABLE = st.one_of(st.sampled_from([5, "fn", None, object(), [print]]), DEEP)
BAD_SCHEMA_ARGS = st.sampled_from([5, "str", object(), [1]])  # not a schema for input=
BAD_CRONS = st.one_of(
    st.sampled_from(["", "   ", "0 9 * *", "* * * * * * *", "0 9 * * MON-FRY", "61 * * * *", "0 0 30 2 *",
                     "@daily", "every night", "* * * * *\x00", "0 9 * * 1-5 " * 30, None]),
    WRONG_TYPES, NUL, SURROGATE, OVER_LONG, DEEP,
)
"""Never a cron expression: not five or six fields, a field out of range, a day that never comes."""
BAD_ZONES = st.one_of(
    st.sampled_from(["", "Europe/Pari", "utc", "localtime", "Europe", "zone.tab", "../etc/passwd",
                     "/etc/localtime", " UTC", "UTC\x00", None]),
    WRONG_TYPES, NUL, SURROGATE, OVER_LONG, DEEP,
)
"""Never an IANA zone name."""
BAD_CATCH_UP = st.one_of(st.sampled_from(["", "every", "LATEST", None, True, 1, ["all"], "all\x00"]), DEEP)
BAD_SCHEDULES = st.one_of(
    st.sampled_from([5, "0 9 * * *", [5], [object()], [None], ["0 9 * * *"], object(),
                     Schedule("s", "wf", "0 9 * * *"),
                     [Schedule("s", "wf", "0 9 * * *"), Schedule("s", "other", "0 3 * * *")]]),
    DEEP,
)
# fmt: on

# -- what a rejection must look like ----------------------------------------------------------------


def assert_rejected(exc: BaseException, word: str, error: type[PgflowError]) -> None:
    """``exc`` is ``error`` (never StorageError), with a bounded message containing ``word``."""
    message = str(exc)
    assert not isinstance(exc, StorageError), f"bad {word} reported as a database failure: {message}"
    assert isinstance(exc, error), f"bad {word}: {type(exc).__name__} instead of {error.__name__}: {message}"
    assert len(message) <= MAX_MESSAGE, f"message of {len(message)} characters for a bad {word}"
    assert word in message, f"message does not name {word!r}: {message}"


def assert_named(call: Callable[[], Any], word: str, error: type[PgflowError]) -> None:
    """``call()`` raises ``error`` with a bounded message containing ``word``."""
    with pytest.raises(PgflowError) as caught:
        call()
    assert_rejected(caught.value, word, error)


@attrs.frozen
class Case:
    """One argument of one public callable: a call taking the value (and the store under test,
    for client methods), the bad values, the error they raise and the word naming the argument."""

    label: str
    call: Callable[[Any, Any], Any]
    bad: st.SearchStrategy[Any]
    error: type[PgflowError]
    word: str

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.label)


def drawn_cases(cases: list[Case]) -> st.SearchStrategy[tuple[Case, Any]]:
    """A case and one of its bad values."""
    return st.sampled_from(cases).flatmap(lambda case: st.tuples(st.just(case), case.bad))


# -- client methods ---------------------------------------------------------------------------------


@workflow("fuzz")
def fuzz_wf(ctx: pgflow.Context[Any]) -> Any:
    yield Run("first", noop)
    data = yield WaitFor("wait", event="go")
    return data


def noop() -> int:
    return 1


def method(name: str, valid: dict[str, Any], argument: str, bad: Any, error: type[PgflowError]) -> Case:
    """``client.<name>(**valid, <argument>=value)``; ``valid`` may name the fixture's run as ``RUN``."""

    def call(target: tuple[Any, str], value: Any) -> Any:
        client, run_id = target
        kwargs = {k: run_id if v is RUN else v for k, v in valid.items()}
        return getattr(client, name)(**{**kwargs, argument: value})

    return Case(f"{name}({argument}=...)", call, bad, error, argument)


RUN: Any = object()  # stands for the id of the fixture's run
ON_RUN = {"run_id": RUN}
METHODS: dict[str, list[Case]] = {
    "start_workflow": [
        method("start_workflow", {"workflow": fuzz_wf}, arg, bad, error)
        for arg, bad, error in [
            ("workflow", BAD_IDS, InvalidArgumentError),
            ("input", BAD_DATA, InvalidInputError),
            ("resource_id", BAD_IDS, InvalidArgumentError),
            ("idempotency_key", BAD_IDS, InvalidArgumentError),
            ("timeout", BAD_TIMEOUTS, InvalidDurationError),
            ("retries", BAD_RETRIES, InvalidArgumentError),
        ]
    ],
    "trigger_event": [
        method("trigger_event", {**ON_RUN, "event": "go"}, arg, bad, error)
        for arg, bad, error in [
            ("run_id", BAD_IDS, InvalidArgumentError),
            ("event", BAD_IDS, InvalidArgumentError),
            ("data", BAD_DATA, InvalidArgumentError),
            ("resource_id", BAD_IDS, InvalidArgumentError),
        ]
    ],
    "fast_forward_workflow": [
        method("fast_forward_workflow", ON_RUN, arg, bad, error)
        for arg, bad, error in [
            ("run_id", BAD_IDS, InvalidArgumentError),
            ("data", BAD_DATA, InvalidArgumentError),
            ("resource_id", BAD_IDS, InvalidArgumentError),
        ]
    ],
    **{
        name: [
            method(name, ON_RUN, "run_id", BAD_IDS, InvalidArgumentError),
            method(name, ON_RUN, "resource_id", BAD_IDS, InvalidArgumentError),
        ]
        for name in ("pause_workflow", "resume_workflow", "cancel_workflow", "get_run", "check_progress")
    },
    "get_runs": [
        method("get_runs", {}, arg, bad, InvalidArgumentError)
        for arg, bad in [
            ("resource_id", BAD_IDS),
            ("workflow_id", BAD_IDS),
            ("statuses", BAD_STATUSES),
            ("limit", BAD_LIMITS),
            ("starting_after", BAD_IDS),
            ("ending_before", BAD_IDS),
        ]
    ],
    "wait_for_run": [
        method("wait_for_run", {**ON_RUN, "timeout": "1ms"}, arg, bad, error)
        for arg, bad, error in [
            ("run_id", BAD_IDS, InvalidArgumentError),
            ("until", BAD_UNTIL, InvalidArgumentError),
            ("timeout", BAD_TIMEOUTS, InvalidDurationError),
            ("resource_id", BAD_IDS, InvalidArgumentError),
        ]
    ],
    "retry_workflow": [
        method("retry_workflow", ON_RUN, arg, bad, InvalidArgumentError)
        for arg, bad in [("run_id", BAD_IDS), ("from_step", BAD_IDS), ("resource_id", BAD_IDS)]
    ],
    "create_schedule": [
        method(
            "create_schedule",
            {"schedule_id": "fuzz-s", "workflow": fuzz_wf, "cron": "0 9 * * 1-5"},
            arg,
            bad,
            error,
        )
        for arg, bad, error in [
            ("schedule_id", BAD_IDS, InvalidArgumentError),
            ("workflow", BAD_IDS, InvalidArgumentError),
            ("cron", BAD_CRONS, InvalidArgumentError),
            ("input", BAD_DATA, InvalidInputError),
            ("timezone", BAD_ZONES, InvalidArgumentError),
            ("catch_up", BAD_CATCH_UP, InvalidArgumentError),
        ]
    ],
    **{
        name: [method(name, {}, "schedule_id", BAD_IDS, InvalidArgumentError)]
        for name in ("get_schedule", "pause_schedule", "resume_schedule", "delete_schedule")
    },
}


@pytest.fixture(scope="module")
def pg_client(pg_server_dsn: str) -> Iterator[tuple[pgflow.Client, str, Callable[[], Any]]]:
    """One Client for the module, on its own schema, with a started run and a schedule, and a snapshot
    of every row the schema stores (shared by all examples: a Hypothesis test cannot take per-test fixtures)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    client = pgflow.Client(pg_server_dsn, schema=schema)
    run_id = client.start_workflow(fuzz_wf, {"n": 1}, resource_id="tenant").id
    client.create_schedule("fuzz-s", fuzz_wf, "0 9 * * 1-5", timezone="Europe/Paris")
    conn = psycopg.connect(pg_server_dsn, autocommit=True)
    tables = [
        sql.SQL("(SELECT coalesce(string_agg(t::text, ',' ORDER BY t::text), '') FROM {} t)").format(
            sql.Identifier(schema, name)
        )
        for name in ("runs", "steps", "events", "schedules")
    ]
    query = sql.SQL("SELECT ") + sql.SQL(", ").join(tables)
    try:
        yield client, run_id, lambda: conn.execute(query).fetchone()
    finally:
        client.close()
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[Harness, str, Callable[[], Any]]]:
    """One in-memory Harness for the module, with a run waiting for an event and a schedule, and a
    snapshot of every run (with its timeline), every mailbox, every schedule and the clock."""
    with Harness(workflows=[fuzz_wf], clock=SimClock(T0)) as h:
        run_id = h.start_workflow("fuzz", {"n": 1}, resource_id="tenant").id
        h.run_until_idle()
        h.create_schedule("fuzz-s", fuzz_wf, "0 9 * * 1-5", timezone="Europe/Paris")

        def snapshot() -> Any:
            # get_runs does not show mailboxes: read the store's (a rejected trigger_event adds none)
            mailboxes = {rid: list(events) for rid, events in h.store._mailbox.items()}  # type: ignore[attr-defined]
            return h.get_runs(limit=100).items, mailboxes, h.list_schedules(), h.clock.now()

        yield h, run_id, snapshot


@pytest.mark.postgres
@pytest.mark.parametrize("name", list(METHODS))
def test_postgres_client_methods_name_bad_input(pg_client: Any, name: str) -> None:
    """Each Client method on PostgreSQL answers every bad argument with its named error and writes no row."""
    client, run_id, snapshot = pg_client
    before = snapshot()

    @settings(FUZZ, max_examples=min(settings().max_examples, 60))
    @given(drawn_cases(METHODS[name]))
    def check(drawn: tuple[Case, Any]) -> None:
        case, value = drawn
        assert_named(lambda: case.call((client, run_id), value), case.word, case.error)
        assert snapshot() == before

    check()


@pytest.mark.parametrize("name", list(METHODS))
def test_harness_methods_name_bad_input(harness: Any, name: str) -> None:
    """Each Harness method (in-memory store) answers every bad argument with its named error and stores nothing."""
    h, run_id, snapshot = harness
    before = snapshot()

    @FUZZ
    @given(drawn_cases(METHODS[name]))
    def check(drawn: tuple[Case, Any]) -> None:
        case, value = drawn
        assert_named(lambda: case.call((h, run_id), value), case.word, case.error)
        assert snapshot() == before

    check()


@pytest.mark.postgres
def test_async_client_names_bad_input(pg_client: Any, pg_server_dsn: str) -> None:
    """AsyncClient methods reject bad input like the Client's and write no row."""
    client, run_id, snapshot = pg_client
    before = snapshot()

    async def calls() -> None:
        async with pgflow.AsyncClient(pg_server_dsn, schema=client._backend.schema) as aclient:
            cases: list[tuple[Any, str, type[PgflowError]]] = [
                (aclient.start_workflow(fuzz_wf, deep_list()), "input", InvalidInputError),
                (aclient.start_workflow(fuzz_wf, retries=2**64), "retries", InvalidArgumentError),
                (aclient.trigger_event(run_id, "go\x00"), "event", InvalidArgumentError),
                (aclient.fast_forward_workflow(run_id, {"x": math.nan}), "data", InvalidArgumentError),
                (aclient.get_run("\ud800"), "run_id", InvalidArgumentError),
                (aclient.get_runs(statuses=5), "statuses", InvalidArgumentError),
                (aclient.wait_for_run(run_id, timeout="100000000 weeks"), "timeout", InvalidDurationError),
                (aclient.wait_for_run(run_id, until=None), "until", InvalidArgumentError),
                (aclient.retry_workflow(run_id, from_step="step\x00"), "from_step", InvalidArgumentError),
                (aclient.create_schedule("s", fuzz_wf, "0 9 * *"), "cron", InvalidArgumentError),
                (aclient.create_schedule("s", fuzz_wf, "0 9 * * *", timezone="Europe/Pari"), "timezone",
                 InvalidArgumentError),
                (aclient.create_schedule("s\x00", fuzz_wf, "0 9 * * *"), "schedule_id", InvalidArgumentError),
                (aclient.create_schedule("s", fuzz_wf, "0 9 * * *", input=deep_list()), "input",
                 InvalidInputError),
                (aclient.pause_schedule("\ud800"), "schedule_id", InvalidArgumentError),
            ]  # fmt: skip
            for pending, word, error in cases:
                with pytest.raises(PgflowError) as caught:
                    await pending
                assert_rejected(caught.value, word, error)

    asyncio.run(calls())
    assert snapshot() == before


# -- constructors and definitions ---------------------------------------------------------------------

NOWHERE = "postgresql://localhost/never-connected"  # a valid DSN; a rejected constructor never connects


def option(label: str, build: Callable[..., Any], argument: str, bad: Any, error: type[PgflowError]) -> Case:
    """``build(<argument>=value)``, the message naming ``argument``."""
    return Case(f"{label}({argument}=...)", lambda _, value: build(**{argument: value}), bad, error, argument)


def given_value(
    label: str, build: Callable[[Any], Any], bad: Any, error: type[PgflowError], word: str
) -> Case:
    """``build(value)``, the message containing ``word``."""
    return Case(label, lambda _, value: build(value), bad, error, word)


def with_dsn(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus a valid DSN, unless they give the dsn or a pool (both together are a conflict)."""
    return kwargs if {"dsn", "pool"} & set(kwargs) else {"dsn": NOWHERE, **kwargs}


def gen_fn(ctx: Any) -> Any:
    yield Pause("p")


DSN_OPTIONS = [("dsn", BAD_DSNS, ConfigurationError), ("dsn", BAD_DSN_TEXTS, ConfigurationError)]
CLIENT_OPTIONS = [
    *DSN_OPTIONS,
    ("pool", BAD_POOLS, InvalidArgumentError),
    ("schema", BAD_SCHEMAS, InvalidArgumentError),
    ("clock", BAD_CLOCKS, InvalidArgumentError),
]
ENGINE_OPTIONS = [
    *CLIENT_OPTIONS,
    ("workflows", BAD_WORKFLOWS, InvalidArgumentError),
    ("schedules", BAD_SCHEDULES, InvalidArgumentError),
    ("concurrency", BAD_CONCURRENCY, InvalidArgumentError),
    ("lease", BAD_SPANS, InvalidDurationError),
    ("min_poll_interval", BAD_SPANS, InvalidDurationError),
]
HARNESS_OPTIONS = [
    *DSN_OPTIONS,
    ("workflows", BAD_WORKFLOWS, InvalidArgumentError),
    ("schema", BAD_SCHEMAS, InvalidArgumentError),
    ("clock", st.one_of(BAD_CLOCKS, st.just(SystemClock())), InvalidArgumentError),
    ("lease", BAD_SPANS, InvalidDurationError),
    ("min_poll_interval", BAD_SPANS, InvalidDurationError),
]
# fmt: off
RETRY_OPTIONS = [
    ("max_attempts", st.one_of(BAD_RETRIES, st.just(0)), InvalidArgumentError),
    ("initial", BAD_SPANS, InvalidDurationError),
    ("max_delay", BAD_SPANS, InvalidDurationError),
    ("factor", st.sampled_from([0, -1.5, math.nan, math.inf, 10**400, "2", True, None]), InvalidArgumentError),
    ("jitter", st.sampled_from([-0.1, 1.5, math.nan, "0.1", True, None, 2**64]), InvalidArgumentError),
    ("non_retryable", st.sampled_from([5, "ValueError", [5], (ValueError, 5), int, deep_list()]), InvalidArgumentError),
]

CONSTRUCTORS: dict[str, list[Case]] = {
    "Engine": [option("Engine", lambda **kw: pgflow.Engine(**with_dsn(kw)), *o) for o in ENGINE_OPTIONS],
    "Client": [
        option(cls.__name__, lambda cls=cls, **kw: cls(**with_dsn(kw)), *o)
        for cls in (pgflow.Client, pgflow.AsyncClient)
        for o in CLIENT_OPTIONS
    ],
    "Harness": [option("Harness", Harness, *o) for o in HARNESS_OPTIONS],
    "SimClock": [
        given_value("SimClock(start)", SimClock, BAD_WHENS, InvalidArgumentError, "start"),
        given_value(
            "advance", lambda d: SimClock(T0).advance(d), BAD_TIMEOUTS, InvalidDurationError, "duration"
        ),
        given_value("set", lambda w: SimClock(T0).set(w), BAD_WHENS, InvalidArgumentError, "when"),
    ],
    "AsyncEngine": [
        option("AsyncEngine", lambda **kw: pgflow.AsyncEngine(**with_dsn(kw)), arg, bad, InvalidArgumentError)
        for arg, bad in [("workflows", BAD_WORKFLOWS), ("schedules", BAD_SCHEDULES)]
    ],
    "Schedule": [
        given_value("Schedule(schedule_id)", lambda i: Schedule(i, "wf", "0 9 * * *"), BAD_IDS, InvalidArgumentError, "schedule_id"),
        given_value("Schedule(workflow)", lambda w: Schedule("s", w, "0 9 * * *"), BAD_IDS, InvalidArgumentError, "workflow"),
        given_value("Schedule(cron)", lambda c: Schedule("s", "wf", c), BAD_CRONS, InvalidArgumentError, "cron"),
        option("Schedule", lambda **kw: Schedule("s", "wf", "0 9 * * *", **kw), "timezone", BAD_ZONES, InvalidArgumentError),
        option("Schedule", lambda **kw: Schedule("s", "wf", "0 9 * * *", **kw), "catch_up", BAD_CATCH_UP, InvalidArgumentError),
    ],
    "Retry": [option("Retry", Retry, *o) for o in RETRY_OPTIONS],
    "commands": [
        *(
            given_value(f"{build.__name__}(step_id)", build, BAD_IDS, InvalidArgumentError, "step_id")
            for build in (
                lambda s: Run(s, noop),
                lambda s: WaitFor(s, "e"),
                lambda s: WaitUntil(s, T0),
                lambda s: Delay(s, "1s"),
                Pause,
                lambda s: Poll(s, noop),
                lambda s: Transaction(s, noop),
                lambda s: Child(s, "wf"),
            )
        ),
        given_value("Run(fn)", lambda fn: Run("s", fn), NOT_CALLABLE, InvalidArgumentError, "fn"),
        given_value("Poll(fn)", lambda fn: Poll("s", fn), NOT_CALLABLE, InvalidArgumentError, "fn"),
        given_value(
            "Transaction(fn)", lambda fn: Transaction("s", fn), NOT_CALLABLE, InvalidArgumentError, "fn"
        ),
        option(
            "Run",
            lambda **kw: Run("s", noop, **kw),
            "retry",
            st.sampled_from([3, {"max_attempts": 3}, "3"]),
            InvalidArgumentError,
        ),
        option("Run", lambda **kw: Run("s", noop, **kw), "timeout", BAD_SPANS, InvalidDurationError),
        given_value("WaitFor(event)", lambda e: WaitFor("s", e), BAD_IDS, InvalidArgumentError, "event"),
        option("WaitFor", lambda **kw: WaitFor("s", "e", **kw), "timeout", BAD_SPANS, InvalidDurationError),
        given_value("WaitUntil(when)", lambda w: WaitUntil("s", w), BAD_WHENS, InvalidArgumentError, "when"),
        given_value("Delay(duration)", lambda d: Delay("s", d), BAD_SPANS, InvalidDurationError, "duration"),
        option("Poll", lambda **kw: Poll("s", noop, **kw), "interval", BAD_SPANS, InvalidDurationError),
        option("Poll", lambda **kw: Poll("s", noop, **kw), "timeout", BAD_SPANS, InvalidDurationError),
        given_value("Child(workflow)", lambda w: Child("s", w), BAD_IDS, InvalidArgumentError, "workflow"),
        option("Child", lambda **kw: Child("s", "wf", **kw), "resource_id", BAD_IDS, InvalidArgumentError),
        given_value(
            "All(*commands)",
            lambda parts: All(*parts),
            st.sampled_from([(), (5,), (Pause("p"), "x"), (All(Pause("p")),), (deep_list(),)]),
            InvalidArgumentError,
            "All",
        ),
    ],
    "definitions": [
        given_value(
            "workflow(id)", lambda i: workflow(i)(gen_fn), BAD_IDS, WorkflowDefinitionError, "workflow id"
        ),
        *(
            option("workflow", lambda **kw: workflow("wf", **kw)(gen_fn), arg, bad, WorkflowDefinitionError)
            for arg, bad in [
                ("retries", BAD_RETRIES),
                ("timeout", BAD_SPANS),
                ("retry_backoff", BAD_SPANS),
                ("input", BAD_SCHEMA_ARGS),
            ]
        ),
        given_value("ref(id)", pgflow.ref, BAD_IDS, WorkflowDefinitionError, "workflow id"),
        option("ref", lambda **kw: pgflow.ref("wf", **kw), "input", BAD_SCHEMA_ARGS, WorkflowDefinitionError),
        *(
            option(
                "implement",
                lambda **kw: pgflow.ref("wf").implement(**kw)(gen_fn),
                arg,
                bad,
                WorkflowDefinitionError,
            )
            for arg, bad in [("retries", BAD_RETRIES), ("timeout", BAD_SPANS), ("retry_backoff", BAD_SPANS)]
        ),
        given_value("parse_duration", parse_duration, UNPARSEABLE, InvalidDurationError, "Invalid duration"),
    ],
}
# fmt: on


@pytest.mark.parametrize("group", list(CONSTRUCTORS))
def test_constructors_name_bad_input(group: str) -> None:
    """Engine, AsyncEngine, Client, AsyncClient, Harness, SimClock, Schedule, Retry, every command,
    @workflow, ref, ref.implement and parse_duration answer each bad argument with their named error."""

    @FUZZ
    @given(drawn_cases(CONSTRUCTORS[group]))
    def check(drawn: tuple[Case, Any]) -> None:
        case, value = drawn
        assert_named(lambda: case.call(None, value), case.word, case.error)

    check()


# -- the headline values, whatever the profile ----------------------------------------------------------

HEADLINE: dict[str, Any] = {
    "input": deep_list(),
    "data": deep_list(),
    "timeout": "100000000 weeks",
    "duration": timedelta.max,
    "statuses": 5,
    "until": None,
    "limit": 2**64,
    "retries": 2**64,
    "max_attempts": 2**64,
    "run_id": "run\x00",
    "event": "\ud800",
    "resource_id": "x" * 257,
    "idempotency_key": "key\x00",
    "starting_after": "\udc00",
    "dsn": 5,
    "All": (),
    "schedule_id": "nightly\x00",
    "cron": "0 9 * *",
    "timezone": "Europe/Pari",
    "catch_up": "every",
    "schedules": [Schedule("s", "wf", "0 9 * * *"), Schedule("s", "other", "0 3 * * *")],
}
"""The bad values of the issue: one per argument (others get ``object()``)."""


def test_every_argument_meets_a_headline_value(harness: Any) -> None:
    """Every (callable, argument) pair above rejects one fixed bad value from the issue (a NUL, a lone
    surrogate, 10,000-deep nesting, 2**64, "100000000 weeks", ...), whatever the Hypothesis profile."""
    h, run_id, snapshot = harness
    before = snapshot()
    for case in [c for cases in METHODS.values() for c in cases]:
        value = HEADLINE.get(case.word, object())
        assert_named(lambda case=case, value=value: case.call((h, run_id), value), case.word, case.error)  # type: ignore[misc]
    for case in [c for cases in CONSTRUCTORS.values() for c in cases]:
        value = HEADLINE.get(case.word, object())
        assert_named(lambda case=case, value=value: case.call(None, value), case.word, case.error)  # type: ignore[misc]
    assert snapshot() == before


def test_the_harness_and_engine_helpers_check_their_arguments() -> None:
    """Harness.register / crash_before / crash_after / run_until_idle / run_until_complete and
    Engine.start answer bad input with named errors."""
    from pgflow.testing import Harness

    with Harness() as h:
        with pytest.raises(pgflow.WorkflowDefinitionError, match="register"):
            h.register("not a workflow")  # type: ignore[arg-type]
        for method in (h.crash_before, h.crash_after):
            with pytest.raises(pgflow.InvalidArgumentError, match="step_id"):
                method("bad\x00id")
        with pytest.raises(pgflow.InvalidArgumentError, match="max_rounds"):
            h.run_until_idle("many")  # type: ignore[arg-type]
        with pytest.raises(pgflow.InvalidArgumentError, match="max_steps"):
            h.run_until_complete("run", max_steps=0)
    with pytest.raises(pgflow.InvalidArgumentError, match="worker"):
        pgflow.Engine("postgresql://nowhere/db").start(worker="yes")  # type: ignore[arg-type]
