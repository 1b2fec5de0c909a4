"""The shared argument checks (``arguments.py``, ``durations.check_*``) and how bad values are shown."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pendulum
import pytest

from pgflow import All, Child, Pause, Retry, RunStatus, WaitFor, ref, serde, workflow
from pgflow.arguments import (
    MAX_SHOWN,
    MAX_SPAN,
    add_time,
    check_id,
    check_int,
    check_number,
    check_statuses,
    clip,
    shown,
)
from pgflow.durations import check_duration, check_when
from pgflow.errors import InvalidArgumentError, InvalidDurationError, SerializationError


def nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "value", [nested(10_000), "x" * 1_000_000, list(range(100_000)), {str(i): i for i in range(999)}]
)
def test_shown_is_bounded_whatever_the_value(value: Any) -> None:
    """``shown`` never exceeds 200 characters, even for 10,000-deep or megabyte values."""
    assert len(shown(value)) <= MAX_SHOWN


def test_shown_escapes_nul_and_surrogates_and_survives_a_broken_repr() -> None:
    """NUL and lone surrogates are escaped as ``repr`` shows them; a failing repr shows the type."""
    assert shown("a\x00b") == "'a\\x00b'"
    assert shown("\ud800") == "'\\ud800'"
    assert shown(BrokenRepr()).startswith("<BrokenRepr ")
    assert clip("y" * 500, 20) == "y" * 17 + "..."


@pytest.mark.parametrize(
    ("value", "problem"),
    [(5, "got int"), ("", "empty"), ("x" * 257, "257 characters"), ("a\x00", "NUL"), ("\udfff", "surrogate")],
)
def test_check_id_says_what_is_wrong(value: Any, problem: str) -> None:
    """An id error names the argument, states the rule, and says what is wrong with the value."""
    with pytest.raises(InvalidArgumentError, match="run_id must be a string of 1-256 characters") as caught:
        check_id(value, "run_id")
    assert problem in str(caught.value)
    assert check_id("x" * 256, "run_id") == "x" * 256


def test_check_int_rejects_bools_and_out_of_range() -> None:
    """Bools are not ints here; the range is inclusive."""
    assert check_int(7, "retries", 0, 7) == 7
    for bad in (True, 8, -1, 2**64, "3", 3.0):
        with pytest.raises(InvalidArgumentError, match="retries"):
            check_int(bad, "retries", 0, 7)


def test_check_number_bounds() -> None:
    """Finite numbers in range pass (ints too); NaN, infinities, bools and huge ints do not."""
    assert check_number(1, "jitter", 0, 1) == 1.0
    assert check_number(0.5, "factor", 0, above=True) == 0.5
    for bad in (0, math.nan, math.inf, True, 10**400, "1"):
        with pytest.raises(InvalidArgumentError, match="factor"):
            check_number(bad, "factor", 0, above=True)


def test_check_statuses_accepts_names_members_and_iterables() -> None:
    """A name, a RunStatus, or any iterable of them; anything else names the argument."""
    assert check_statuses("pending", "until") == ("pending",)
    assert check_statuses(RunStatus.FAILED, "until") == ("failed",)
    assert check_statuses(frozenset({RunStatus.COMPLETED}), "until") == ("completed",)
    assert check_statuses((s for s in ["paused", "running"]), "until") == ("paused", "running")
    for bad in (5, None, b"pending", {"pending": 1}, ["sleeping"], [5], range(1000)):
        with pytest.raises(InvalidArgumentError, match="until"):
            check_statuses(bad, "until")


def test_check_duration_names_the_argument_and_refuses_endless_spans() -> None:
    """A bad duration names its argument; one longer than all datetimes can never be added to a time."""
    assert check_duration("90s", "timeout") == pendulum.duration(seconds=90)
    with pytest.raises(InvalidDurationError, match=r"^Invalid duration for timeout: 'soon'"):
        check_duration("soon", "timeout")
    for endless in ("100000000 weeks", timedelta.max, MAX_SPAN + timedelta(days=1)):
        with pytest.raises(InvalidDurationError, match="past year 9999"):
            check_duration(endless, "lease")
    with pytest.raises(InvalidArgumentError, match=r"^when: Invalid time"):
        check_when("tomorrow-ish", "when")


def test_add_time_refuses_times_past_year_9999() -> None:
    """``now + span`` past year 9999 is an InvalidDurationError naming the argument, not an OverflowError."""
    now = pendulum.datetime(2030, 1, 1, tz="UTC")
    assert add_time(now, timedelta(days=1), "timeout") == now.add(days=1)
    with pytest.raises(InvalidDurationError, match="timeout"):
        add_time(now, timedelta(days=3_000_000), "timeout")


def test_serialisation_errors_show_a_short_path() -> None:
    """A bad value deep inside data is located by a shortened path; huge keys are abbreviated."""
    with pytest.raises(SerializationError) as caught:
        serde.to_json({"k" * 10_000: [nested(300), math.nan]}, root="data")
    message = str(caught.value)
    assert len(message) < 600 and "data['kkk" in message and "levels)" not in message
    deep: Any = math.nan
    for _ in range(200):
        deep = {"a": deep}
    with pytest.raises(
        SerializationError, match=r"data\['a'\]\['a'\]\['a'\]\['a'\]\.\.\.\(192 levels\)\.\.\."
    ):
        serde.to_json(deep, root="data")
    with pytest.raises(SerializationError, match="4300 digits"):
        serde.to_json({"n": 10**5000})


def test_commands_accept_workflows_refs_and_single_exception_classes() -> None:
    """Child takes a Workflow, a WorkflowRef or an id; Retry's non_retryable takes one class or several."""

    @workflow("child")
    def child(ctx: Any) -> Any:
        yield Pause("p")

    assert Child("c", child).workflow is child
    assert Child("c", ref("child")).workflow.id == "child"
    assert Retry(non_retryable=KeyError).non_retryable == (KeyError,)
    assert Retry(non_retryable=[KeyError, ValueError]).non_retryable == (KeyError, ValueError)
    with pytest.raises(InvalidArgumentError, match="All"):
        All(WaitFor("w", "e"), All(Pause("p")))  # type: ignore[arg-type]


def test_backoff_with_a_huge_factor_is_capped() -> None:
    """A large factor after many attempts waits ``max_delay`` (± jitter) instead of overflowing."""
    policy = Retry(max_attempts=5000, factor=1e300, max_delay="1h", jitter=0)
    assert policy.backoff(4000, "seed") == pendulum.duration(hours=1)
