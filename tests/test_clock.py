"""The Clock protocol, the system clock and UTC normalisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pendulum

from pgflow.clock import Clock, SystemClock, ensure_utc


def test_system_clock_is_utc_and_current() -> None:
    """SystemClock.now() is an aware UTC pendulum DateTime close to the wall clock."""
    clock = SystemClock()
    now = clock.now()
    assert isinstance(now, pendulum.DateTime)
    assert now.timezone_name == "UTC"
    assert abs(now.timestamp() - datetime.now(UTC).timestamp()) < 5
    assert isinstance(clock, Clock)


def test_any_object_with_now_is_a_clock() -> None:
    """Clock is structural: any object with now() satisfies it, others do not."""

    class Fixed:
        def now(self) -> pendulum.DateTime:
            return pendulum.datetime(2030, 1, 1, tz="UTC")

    fixed: Clock = Fixed()
    assert isinstance(fixed, Clock)
    assert fixed.now().year == 2030
    assert not isinstance(object(), Clock)


def test_ensure_utc() -> None:
    """Naive datetimes are read as UTC; aware ones keep their instant and are converted to UTC."""
    naive = ensure_utc(datetime(2024, 1, 1, 12, 0))
    assert naive == pendulum.datetime(2024, 1, 1, 12, tz="UTC")
    assert naive.timezone_name == "UTC"
    aware = ensure_utc(datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5))))
    assert aware == pendulum.datetime(2024, 1, 1, 17, tz="UTC")
    assert aware.timezone_name == "UTC"
    paris = ensure_utc(pendulum.datetime(2024, 7, 1, 12, tz="Europe/Paris"))
    assert (paris.hour, paris.timezone_name) == (10, "UTC")
    assert isinstance(paris, pendulum.DateTime)
