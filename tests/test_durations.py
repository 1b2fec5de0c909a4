"""SPEC §6: parse_duration, to_seconds and parse_when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pgflow.errors
from pgflow.arguments import MAX_SPAN
from pgflow.durations import check_duration, parse_duration, parse_when, to_seconds
from pgflow.errors import InvalidArgumentError, InvalidDurationError

# -- parse_duration: accepted values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3d", timedelta(days=3)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
        ("500ms", timedelta(milliseconds=500)),
        ("1 week", timedelta(weeks=1)),
        ("1d 12h", timedelta(days=1, hours=12)),
        ("2 days 12 hours", timedelta(days=2, hours=12)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        (".5s", timedelta(milliseconds=500)),
        ("  24h  ", timedelta(hours=24)),
        ("1w2d3h4m5s6ms", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5, milliseconds=6)),
    ],
)
def test_spec_string_vectors(text: str, expected: timedelta) -> None:
    """Every SPEC §6 string example parses to the expected total."""
    result = parse_duration(text)
    assert isinstance(result, pendulum.Duration)
    assert result == expected


@pytest.mark.parametrize(
    ("unit", "scale"),
    [
        *[(u, timedelta(milliseconds=1)) for u in ["ms"]],
        *[(u, timedelta(seconds=1)) for u in ["s", "sec", "secs", "second", "seconds"]],
        *[(u, timedelta(minutes=1)) for u in ["m", "min", "mins", "minute", "minutes"]],
        *[(u, timedelta(hours=1)) for u in ["h", "hr", "hrs", "hour", "hours"]],
        *[(u, timedelta(days=1)) for u in ["d", "day", "days"]],
        *[(u, timedelta(weeks=1)) for u in ["w", "wk", "wks", "week", "weeks"]],
    ],
)
def test_every_unit_alias(unit: str, scale: timedelta) -> None:
    """Each unit spelling from SPEC §6 works with and without a space."""
    assert parse_duration(f"2{unit}") == 2 * scale
    assert parse_duration(f"2 {unit}") == 2 * scale


def test_dict_timedelta_and_numbers() -> None:
    """Dicts, timedeltas, pendulum Durations and int/float seconds are accepted."""
    assert parse_duration({"hours": 1, "minutes": 30}) == timedelta(minutes=90)
    assert parse_duration(
        {"weeks": 1, "days": 1, "hours": 1, "minutes": 1, "seconds": 1, "milliseconds": 1}
    ) == timedelta(weeks=1, days=1, hours=1, minutes=1, seconds=1, milliseconds=1)
    assert parse_duration({"seconds": 1.5}) == timedelta(milliseconds=1500)
    assert parse_duration(timedelta(hours=2)) == timedelta(hours=2)
    assert isinstance(parse_duration(timedelta(hours=2)), pendulum.Duration)
    assert parse_duration(pendulum.duration(minutes=5)) == timedelta(minutes=5)
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration(0.25) == timedelta(milliseconds=250)
    assert isinstance(parse_duration(90), pendulum.Duration)


# -- parse_duration: errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", " ", "\t\n "])
def test_empty_string_message(value: str) -> None:
    """Empty or whitespace strings fail with exactly 'Invalid duration: empty string'."""
    with pytest.raises(InvalidDurationError) as info:
        parse_duration(value)
    assert str(info.value) == "Invalid duration: empty string"


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "5",
        "5 parsecs",
        "h",
        "1h x",
        "1..5h",
        "1h,30m",
        None,
        True,
        [1],
        b"5s",
        {"years": 1},
        {"hours": "1"},
    ],
)
def test_unparseable_values(value: Any) -> None:
    """Anything unparseable raises InvalidDurationError (a ValueError) naming the value."""
    with pytest.raises(InvalidDurationError, match="Invalid duration") as info:
        parse_duration(value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, pgflow.errors.PgflowError)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "0s", "0ms", "-5s", 0, -1, -0.5, 0.0, {}, {"seconds": 0}, {"hours": -1}, timedelta(0), timedelta(-1),
        pendulum.duration(0), pendulum.duration(seconds=-1),
    ],
)  # fmt: skip
def test_zero_or_negative(value: Any) -> None:
    """Zero or negative durations fail with exactly 'Invalid duration: must be a positive value'."""
    with pytest.raises(InvalidDurationError) as info:
        parse_duration(value)
    assert str(info.value) == "Invalid duration: must be a positive value"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**30, "1e3s"])
def test_non_finite_or_huge(value: Any) -> None:
    """NaN, infinity, out-of-range and exponent notation are rejected, not crashed on."""
    with pytest.raises(InvalidDurationError, match="Invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "Invalid duration: nan (not a finite number)"),
        (float("-inf"), "Invalid duration: -inf (not a finite number)"),
        ({"hours": float("inf")}, "Invalid duration: {'hours': inf} (not a finite number)"),
        (1e20, "Invalid duration: 1e+20 (too large)"),
        ("100000000000000 weeks", "Invalid duration: '100000000000000 weeks' (too large)"),
        ({"weeks": 10**14}, "Invalid duration: {'weeks': 100000000000000} (too large)"),
        ("5 fortnights", "Invalid duration: '5 fortnights' (unknown unit 'fortnights')"),
        ({"years": 1}, "Invalid duration: {'years': 1} (unknown key 'years'; use weeks, days, hours, minutes, seconds, milliseconds)"),
    ],
)  # fmt: skip
def test_rejections_say_why(value: Any, message: str) -> None:
    """Each rejection names the value and says what is wrong with it."""
    with pytest.raises(InvalidDurationError) as info:
        parse_duration(value)
    assert str(info.value) == message


# -- round trip ----------------------------------------------------------------------------------------

_SPELLINGS = {
    "weeks": ["w", "wk", "wks", "week", "weeks"],
    "days": ["d", "day", "days"],
    "hours": ["h", "hr", "hrs", "hour", "hours"],
    "minutes": ["m", "min", "mins", "minute", "minutes"],
    "seconds": ["s", "sec", "secs", "second", "seconds"],
    "milliseconds": ["ms"],
}


@st.composite
def duration_strings(draw: st.DrawFn) -> tuple[str, timedelta]:
    """A string of random number-unit pairs and the total it stands for."""
    keys = draw(st.lists(st.sampled_from(list(_SPELLINGS)), min_size=1, max_size=6))
    parts, total = [], timedelta(0)
    for key in keys:
        amount = draw(st.integers(min_value=0, max_value=1000))
        unit = draw(st.sampled_from(_SPELLINGS[key]))
        parts.append(f"{amount}{draw(st.sampled_from(['', ' ']))}{unit}")
        total += timedelta(**{key: amount})
    text = draw(st.sampled_from(["", " "])).join(parts)
    return text, total


@given(duration_strings())
def test_string_round_trip(case: tuple[str, timedelta]) -> None:
    """Random sums of components, written as strings, parse to the same total."""
    text, total = case
    if total > timedelta(0):
        assert parse_duration(text) == total
    else:
        with pytest.raises(InvalidDurationError, match="must be a positive value"):
            parse_duration(text)


@given(st.timedeltas(min_value=timedelta(microseconds=1)))
def test_timedelta_round_trip(value: timedelta) -> None:
    """A positive timedelta comes back equal, to the microsecond, as a pendulum Duration."""
    result = parse_duration(value)
    assert isinstance(result, pendulum.Duration)
    assert result == value


@given(
    st.fixed_dictionaries(
        {},
        optional={k: st.integers(min_value=0, max_value=10_000) for k in _SPELLINGS},
    )
)
def test_dict_round_trip(value: dict[str, int]) -> None:
    """A dict of components equals the timedelta with the same keyword arguments."""
    total = timedelta(**value)
    if total > timedelta(0):
        assert parse_duration(value) == total


# -- to_seconds -------------------------------------------------------------------------------------------


def test_to_seconds() -> None:
    """to_seconds gives float seconds for timedeltas and anything parse_duration accepts."""
    assert to_seconds(timedelta(minutes=1, milliseconds=500)) == 60.5
    assert to_seconds(pendulum.duration(hours=1)) == 3600.0
    assert to_seconds("1h30m") == 5400.0
    assert to_seconds(2) == 2.0
    assert to_seconds(timedelta(0)) == 0.0


# -- parse_when -------------------------------------------------------------------------------------------


def test_parse_when_accepts_aware_naive_and_iso() -> None:
    """Aware, naive (= UTC) and ISO-8601 values all become UTC pendulum DateTimes."""
    expected = pendulum.datetime(2024, 5, 1, 10, 0, 0, tz="UTC")
    cases: list[Any] = [
        datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 1, 10, 0),
        pendulum.datetime(2024, 5, 1, 6, 0, tz="America/New_York"),
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01T10:00:00",
        "2024-05-01 10:00:00",
    ]
    for value in cases:
        result = parse_when(value)
        assert isinstance(result, pendulum.DateTime)
        assert result == expected
        assert result.utcoffset() == timedelta(0)
        assert result.timezone_name == "UTC"
    assert parse_when("2024-05-01") == pendulum.datetime(2024, 5, 1, tz="UTC")


@pytest.mark.parametrize(
    "value", ["", "tomorrow", "2024-13-01", "P1D", "10:00", 1714557600, None, b"2024-05-01"]
)
def test_parse_when_rejects(value: Any) -> None:
    """Anything but a datetime or an ISO-8601 date-time raises InvalidArgumentError('Invalid time...')."""
    with pytest.raises(InvalidArgumentError, match="Invalid time"):
        parse_when(value)


def test_parse_when_out_of_range() -> None:
    """An aware datetime that has no UTC representation is an InvalidArgumentError showing the
    value, not a crash."""
    value = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(InvalidArgumentError) as info:
        parse_when(value)
    assert str(info.value) == f"Invalid time: {value!r} (out of range in UTC)"


@pytest.mark.parametrize("value", ["tomorrow", "2024-13-01"])
def test_parse_when_says_why_a_string_does_not_parse(value: str) -> None:
    """An unparseable time string is rejected with the value and the parser's own explanation."""
    with pytest.raises(ValueError) as parser:
        pendulum.parse(value, tz="UTC", exact=True)
    with pytest.raises(InvalidArgumentError) as info:
        parse_when(value)
    assert str(info.value) == f"Invalid time: {value!r} ({parser.value})"


def test_a_date_alone_is_its_midnight_in_utc() -> None:
    """An ISO date without a time means that day's midnight, as a UTC DateTime."""
    result = parse_when(" 2024-05-01 ")
    assert result == pendulum.datetime(2024, 5, 1, tz="UTC") and result.timezone_name == "UTC"


# -- check_duration ---------------------------------------------------------------------------------------


def test_check_duration_shows_the_value_as_given() -> None:
    """The message names the argument once and shows the value unchanged, even a value that looks
    like an error message itself."""
    with pytest.raises(InvalidDurationError) as info:
        check_duration("Invalid duration: 5m", "timeout")
    assert str(info.value).startswith("Invalid duration for timeout: 'Invalid duration: 5m' (")


def test_check_duration_accepts_the_span_from_the_first_time_to_the_last() -> None:
    """The longest span some time can still be moved by (from year 1 to year 9999) is accepted."""
    assert check_duration(MAX_SPAN, "timeout") == MAX_SPAN
    assert datetime.min + check_duration(MAX_SPAN, "timeout") == datetime.max


@pytest.mark.parametrize("value", ["100000000 weeks", timedelta.max, MAX_SPAN + timedelta(microseconds=1)])
def test_check_duration_refuses_a_span_past_every_time(value: Any) -> None:
    """A span that cannot be added to any time is refused with a message naming the argument and
    showing the value."""
    with pytest.raises(InvalidDurationError) as info:
        check_duration(value, "timeout")
    assert str(info.value) == f"Invalid duration for timeout: {value!r} reaches past year 9999 from any time"


@given(st.datetimes(datetime(1800, 1, 1), datetime(2300, 1, 1), timezones=st.timezones()))
def test_parse_when_keeps_the_instant(value: datetime) -> None:
    """Converting to UTC never changes the instant (naive values are read as UTC)."""
    result = parse_when(value)
    assert result.timezone_name == "UTC"
    if value.tzinfo is not None and value.utcoffset() is not None:
        # compare in UTC: PEP 495 makes gap/fold times unequal to any other zone's datetime
        assert result == value.astimezone(UTC)
    else:
        assert result == value.replace(tzinfo=UTC)
    assert parse_when(result.isoformat()) == result
