"""The cron seam and the pure schedule rules (SPEC §16): expressions, zones, daylight-saving changes,
which ticks a due schedule starts under each catch-up policy, replacing, pausing. No store here."""

from __future__ import annotations

import sys
import time
from datetime import timedelta

import attrs
import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgflow import ConfigurationError, InvalidArgumentError, Schedule
from pgflow.cron import CronSpec, check_cron, check_timezone, explain
from pgflow.schedules import (
    MAX_CATCH_UP,
    ON_TIME,
    ScheduleRow,
    check_schedules,
    due_ticks,
    new_row,
    paused,
    replaced,
    resumed,
    tick_key,
)

UTC = "UTC"
PARIS = "Europe/Paris"
ZERO = timedelta(0)


def utc(text: str) -> pendulum.DateTime:
    parsed = pendulum.parse(text)
    assert isinstance(parsed, pendulum.DateTime)
    return parsed.in_timezone("UTC")


def chain(expr: str, zone: str, start: str, count: int) -> list[str]:
    """The next ``count`` ticks after ``start``, as UTC ISO strings."""
    spec, out, when = CronSpec(expr, zone), [], utc(start)
    for _ in range(count):
        tick = spec.next_after(when)
        assert tick is not None
        out.append(tick.strftime("%Y-%m-%dT%H:%M:%SZ"))
        when = tick
    return out


# -- expressions and zones --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr", ["*/15 * * * *", "0 9 * * 1-5", "0 9 * * MON-FRI", "30 0 12 * * *", "0 0 L * *"]
)
def test_five_and_six_field_expressions_are_accepted(expr: str) -> None:
    """Five fields (minute precision) or six (seconds first)."""
    assert check_cron(f"  {expr}  ") == expr


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("* * *", "5 fields"),
        ("* * * * * * *", "5 fields"),
        ("@daily", "5 fields"),
        ("", "cron expression"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 25 * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "not a valid cron expression"),
        ("0 0 * * fri-mon", "not a valid cron expression"),
        (5, "got int"),
        (None, "got NoneType"),
        ("0 9 * * 1–5", "cron expression"),  # an en dash, pasted from a document
    ],
)
def test_bad_cron_expressions_are_named_errors(expr: object, why: str) -> None:
    with pytest.raises(InvalidArgumentError, match="cron") as info:
        check_cron(expr)
    assert why in str(info.value)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_iana_zones_are_accepted(zone: str) -> None:
    assert check_timezone(zone) == zone


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "", "localtime", "../etc/passwd", "/etc/localtime", None, 1]
)
def test_unknown_zones_are_named_errors(zone: object) -> None:
    """Only IANA names, and none that means another zone on each machine (``localtime``)."""
    with pytest.raises(InvalidArgumentError, match="timezone"):
        check_timezone(zone)


def test_without_the_cron_library_a_schedule_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """cronsim is the schedules extra: without it, a schedule is a ConfigurationError naming it."""
    monkeypatch.setitem(sys.modules, "cronsim", None)
    with pytest.raises(ConfigurationError, match=r"pgflow-engine\[schedules\]"):
        check_cron("0 9 * * *")
    with pytest.raises(ConfigurationError, match="cronsim"):
        Schedule("nightly", "report", "0 2 * * *")


def test_expressions_are_explained() -> None:
    assert explain("0 9 * * 1-5") == "At 09:00 on Monday through Friday"


# -- daylight-saving changes (cronsim follows Debian's cron) -------------------------------------------


def test_a_time_in_the_skipped_hour_runs_right_after_the_change() -> None:
    """02:30 Europe/Paris on 2026-03-29 (02:00 -> 03:00): at 03:00 CEST, once; the days around it
    at 02:30 local (01:30 UTC in winter, 00:30 UTC in summer)."""
    assert chain("30 2 * * *", PARIS, "2026-03-27T12:00:00Z", 4) == [
        "2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z",
    ]  # fmt: skip


def test_a_time_in_the_repeated_hour_runs_once() -> None:
    """02:30 Europe/Paris on 2026-10-25 (03:00 -> 02:00): once, at the first 02:30."""
    assert chain("30 2 * * *", PARIS, "2026-10-23T12:00:00Z", 3) == [
        "2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z",
    ]  # fmt: skip


def test_weekdays_at_nine_follow_the_change() -> None:
    """09:00 Paris on weekdays: 08:00 UTC before the spring change, 07:00 UTC after, no weekend."""
    assert chain("0 9 * * 1-5", PARIS, "2026-03-26T12:00:00Z", 3) == [
        "2026-03-27T08:00:00Z", "2026-03-30T07:00:00Z", "2026-03-31T07:00:00Z",
    ]  # fmt: skip


def test_jobs_more_frequent_than_hourly_keep_their_pace_in_absolute_time() -> None:
    """Every 15 minutes: the repeated hour of the autumn change has its four ticks twice (they are
    real quarters of an hour), the skipped hour of spring none."""
    autumn = chain("*/15 * * * *", PARIS, "2026-10-24T23:50:00Z", 10)
    assert autumn == [f"2026-10-25T{h:02d}:{m:02d}:00Z" for h in (0, 1) for m in (0, 15, 30, 45)] + [
        "2026-10-25T02:00:00Z", "2026-10-25T02:15:00Z",
    ]  # fmt: skip
    spring = chain("*/15 * * * *", PARIS, "2026-03-29T00:40:00Z", 3)
    assert spring == ["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z"]


def test_six_fields_have_seconds_first() -> None:
    assert chain("15,45 0 12 * * *", UTC, "2026-01-01T00:00:00Z", 3) == [
        "2026-01-01T12:00:15Z", "2026-01-01T12:00:45Z", "2026-01-02T12:00:15Z",
    ]  # fmt: skip


def test_walking_back_finds_the_ticks_before_a_time() -> None:
    spec = CronSpec("*/15 * * * *", UTC)
    assert spec.back_from(utc("2026-01-01T10:00:00Z"), 1) == utc("2026-01-01T09:45:00Z")
    assert spec.back_from(utc("2026-01-01T10:00:00.5Z"), 1) == utc("2026-01-01T10:00:00Z")
    assert spec.back_from(utc("2026-01-01T10:00:00Z"), 4) == utc("2026-01-01T09:00:00Z")


# -- which ticks a due schedule starts --------------------------------------------------------------


def row(
    cron: str = "*/15 * * * *", *, zone: str = UTC, catch_up: str = "latest", at: str = "2026-01-01T00:00:00Z"
) -> ScheduleRow:
    return new_row("s", "wf", cron, zone, None, catch_up, utc(at))  # type: ignore[arg-type]


def fire(r: ScheduleRow, now: str, on_time: timedelta = ON_TIME) -> tuple[list[str], str | None]:
    found = due_ticks(r, utc(now), on_time)
    ticks = [t.strftime("%H:%M:%S") for t in found.ticks]
    return ticks, found.next_tick_at.strftime("%Y-%m-%dT%H:%M:%SZ") if found.next_tick_at else None


def test_a_schedule_not_yet_due_starts_nothing() -> None:
    assert fire(row(), "2026-01-01T00:14:59Z") == ([], "2026-01-01T00:15:00Z")


def test_a_tick_fired_a_little_late_is_on_time() -> None:
    """A worker's ordinary delay (within ON_TIME) misses nothing, whatever the policy."""
    for policy in ("latest", "all", "none"):
        assert fire(row(catch_up=policy), "2026-01-01T00:15:03Z") == (["00:15:00"], "2026-01-01T00:30:00Z")


def test_on_time_ticks_of_a_seconds_schedule_all_start() -> None:
    """Every second, fired 3.5 s late: the 4 ticks are on time, each starts (no catch-up involved)."""
    r = row("* * * * * *", catch_up="none", at="2026-01-01T00:00:00Z")
    assert fire(r, "2026-01-01T00:00:04.5Z") == (
        ["00:00:01", "00:00:02", "00:00:03", "00:00:04"],
        "2026-01-01T00:00:05Z",
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("latest", ["02:45:00"]),
        ("none", []),
        ("all", ["00:15:00", "00:30:00", "00:45:00", "01:00:00", "01:15:00", "01:30:00", "01:45:00",
                 "02:00:00", "02:15:00", "02:30:00", "02:45:00"]),
    ],
)  # fmt: skip
def test_missed_ticks_follow_the_catch_up_policy(policy: str, expected: list[str]) -> None:
    """No worker from 00:00 to 02:50: latest starts 02:45, all starts each, none starts none."""
    assert fire(row(catch_up=policy), "2026-01-01T02:50:00Z") == (expected, "2026-01-01T03:00:00Z")


def test_latest_with_an_on_time_tick_starts_only_that_one() -> None:
    """Back 5 s after a tick: that tick is the most recent, and the only one started."""
    assert fire(row(), "2026-01-01T02:45:05Z") == (["02:45:00"], "2026-01-01T03:00:00Z")


def test_the_harness_is_never_late() -> None:
    """With no on-time window (the harness), a tick is on time only at its own time."""
    assert fire(row(catch_up="none"), "2026-01-01T00:15:00Z", ZERO) == (["00:15:00"], "2026-01-01T00:30:00Z")
    assert fire(row(catch_up="none"), "2026-01-01T00:15:01Z", ZERO) == ([], "2026-01-01T00:30:00Z")


def test_catch_up_all_starts_at_most_the_last_thousand_and_stays_cheap() -> None:
    """A year without a worker, every second: the 1,000 most recent missed ticks, found without
    counting the 31 million before them."""
    r = row("* * * * * *", catch_up="all", at="2025-01-01T00:00:00Z")
    began = time.perf_counter()
    found = due_ticks(r, utc("2026-01-01T00:00:00.5Z"), ZERO)
    assert time.perf_counter() - began < 5
    assert len(found.ticks) == MAX_CATCH_UP
    assert found.ticks[-1] == utc("2026-01-01T00:00:00Z")
    assert found.ticks[0] == utc("2025-12-31T23:43:21Z")
    latest = due_ticks(attrs.evolve(r, catch_up="latest"), utc("2026-01-01T00:00:00.5Z"), ZERO)
    assert latest.ticks == (utc("2026-01-01T00:00:00Z"),)


def test_a_paused_schedule_has_no_due_tick() -> None:
    r = paused(row(), utc("2026-01-01T00:01:00Z"))
    assert r.next_tick_at is None
    assert due_ticks(r, utc("2026-01-02T00:00:00Z")).ticks == ()


@given(
    expr=st.sampled_from(["*/15 * * * *", "0 9 * * 1-5", "30 2 * * *", "*/20 * * * * *", "0 */6 * * *"]),
    zone=st.sampled_from([UTC, PARIS, "America/New_York", "Australia/Lord_Howe"]),
    start=st.integers(0, 400 * 86_400),
    gap=st.integers(0, 20 * 86_400),
    policy=st.sampled_from(["latest", "all", "none"]),
)
def test_due_ticks_are_the_forward_ticks_the_policy_keeps(
    expr: str, zone: str, start: int, gap: int, policy: str
) -> None:
    """Whatever the gap: ticks are in order, between the schedule's next tick and now, on the
    forward chain of ticks; every on-time one is kept; the next tick is the first after now."""
    base = utc("2026-01-01T00:00:00Z").add(seconds=start)
    r = new_row("s", "wf", expr, zone, None, policy, base)  # type: ignore[arg-type]
    now = base.add(seconds=gap, microseconds=250_000)
    found = due_ticks(r, now, ON_TIME)
    spec = r.spec
    assert list(found.ticks) == sorted(set(found.ticks))
    assert found.next_tick_at == spec.next_after(now)
    for tick in found.ticks:
        assert r.next_tick_at is not None and r.next_tick_at <= tick <= now
        assert spec.next_after(tick - timedelta(microseconds=1)) == tick  # a tick of the forward chain
    first = r.next_tick_at
    assert first is not None
    on_time = [t for t in _forward(spec, first, now) if t >= now - ON_TIME]
    assert set(on_time) <= set(found.ticks)
    missed = len(found.ticks) - len(on_time)
    if policy == "none":
        assert missed == 0
    elif policy == "latest":
        assert missed == (0 if on_time or first > now - ON_TIME else 1)


def _forward(spec: CronSpec, first: pendulum.DateTime, now: pendulum.DateTime) -> list[pendulum.DateTime]:
    """The ticks from ``first`` to ``now`` one by one, from the end of the gap only (bounded)."""
    start = max(first, now - ON_TIME - timedelta(seconds=1))
    out, tick = [], spec.next_after(start - timedelta(microseconds=1))
    while tick is not None and tick <= now:
        out.append(tick)
        tick = spec.next_after(tick)
    return out


# -- replacing, pausing, resuming ---------------------------------------------------------------------


def test_replacing_with_the_same_cron_keeps_the_place() -> None:
    """An engine that restarts (it upserts its schedules) misses nothing and repeats nothing."""
    old = attrs.evolve(row(), last_tick_at=utc("2026-01-01T00:15:00Z"), last_run_id="r1")
    new = attrs.evolve(row(at="2026-01-01T05:00:00Z"), input={"x": 1}, catch_up="all")
    kept = replaced(old, new)
    assert (kept.next_tick_at, kept.last_tick_at, kept.last_run_id) == (
        old.next_tick_at,
        old.last_tick_at,
        "r1",
    )
    assert (kept.input, kept.catch_up, kept.created_at) == ({"x": 1}, "all", old.created_at)


def test_replacing_with_another_cron_or_zone_starts_afresh() -> None:
    old = row()
    for new in (row("0 * * * *", at="2026-01-01T05:10:00Z"), row(zone=PARIS, at="2026-01-01T05:10:00Z")):
        assert replaced(old, new).next_tick_at == new.next_tick_at


def test_replacing_a_paused_schedule_keeps_it_paused() -> None:
    old = paused(row(), utc("2026-01-01T00:01:00Z"))
    kept = replaced(old, row("0 * * * *", at="2026-01-01T05:00:00Z"))
    assert kept.paused and kept.next_tick_at is None and kept.cron == "0 * * * *"


def test_resuming_continues_from_the_next_tick() -> None:
    r = paused(row(), utc("2026-01-01T00:01:00Z"))
    back = resumed(r, utc("2026-01-01T03:07:00Z"))
    assert not back.paused and back.next_tick_at == utc("2026-01-01T03:15:00Z")
    assert resumed(back, utc("2026-01-01T04:00:00Z")) == back  # resuming an active one changes nothing


def test_tick_keys_are_iso_8601_utc() -> None:
    tick = pendulum.datetime(2026, 3, 30, 9, 0, tz=PARIS)
    assert tick_key("paris-report", tick) == "schedule:paris-report:2026-03-30T07:00:00Z"


# -- the Schedule value -------------------------------------------------------------------------------


def test_a_schedule_checks_its_arguments() -> None:
    s = Schedule("nightly", "report", "0  2 * * *", input={"full": True}, timezone=PARIS, catch_up="all")
    assert (s.schedule_id, s.workflow, s.cron, s.timezone, s.catch_up) == (
        "nightly",
        "report",
        "0 2 * * *",
        PARIS,
        "all",
    )
    with pytest.raises(InvalidArgumentError, match="schedule_id"):
        Schedule("", "report", "0 2 * * *")
    with pytest.raises(InvalidArgumentError, match="workflow"):
        Schedule("s", 42, "0 2 * * *")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="cron"):
        Schedule("s", "report", "every night")
    with pytest.raises(InvalidArgumentError, match="timezone"):
        Schedule("s", "report", "0 2 * * *", timezone="Europe/Pariss")
    with pytest.raises(InvalidArgumentError, match="catch_up"):
        Schedule("s", "report", "0 2 * * *", catch_up="some")  # type: ignore[arg-type]


def test_an_engines_schedules_are_schedules_with_distinct_ids() -> None:
    a = Schedule("a", "report", "0 2 * * *")
    assert check_schedules([a]) == (a,)
    with pytest.raises(InvalidArgumentError, match="two schedules with id 'a'"):
        check_schedules([a, Schedule("a", "other", "0 3 * * *")])
    with pytest.raises(InvalidArgumentError, match=r"pgflow\.Schedule"):
        check_schedules(["0 2 * * *"])
    with pytest.raises(InvalidArgumentError, match="iterable"):
        check_schedules(a)
