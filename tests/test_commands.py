"""Step commands (SPEC §2) as values: construction, defaults, ``Retry`` and its backoff."""

from __future__ import annotations

import attrs
import pendulum
import pytest

from pgflow import (
    All,
    Child,
    Delay,
    Pause,
    Poll,
    PollResult,
    Retry,
    Run,
    Sleep,
    Transaction,
    WaitFor,
    WaitUntil,
)
from pgflow.commands import KIND_OF
from pgflow.errors import InvalidArgumentError, InvalidDurationError


def boom(*args: object) -> None:
    raise AssertionError("commands never run anything when built")


def test_building_a_command_runs_nothing() -> None:
    """Constructing commands is pure: no function is called."""
    Run("r", boom, 1, 2)
    Poll("p", boom)
    Transaction("t", boom, 1)


def test_run_keeps_positional_args_and_options() -> None:
    """``Run(step_id, fn, *args, retry=, timeout=)`` keeps args as a tuple."""
    policy = Retry(max_attempts=2)
    cmd = Run("charge", boom, "card", 10, retry=policy, timeout="5s")
    assert (cmd.step_id, cmd.fn, cmd.args, cmd.retry, cmd.timeout) == (
        "charge",
        boom,
        ("card", 10),
        policy,
        "5s",
    )
    assert Run("x", boom).args == () and Run("x", boom).retry is None


def test_commands_are_frozen() -> None:
    """Commands are immutable values."""
    cmd = WaitFor("w", "evt")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cmd.event = "other"  # type: ignore[misc]


def test_commands_compare_by_value() -> None:
    """Two equal commands are equal."""
    assert WaitFor("w", "e", timeout="1h") == WaitFor("w", "e", timeout="1h")
    assert Delay("d", "1h") != Delay("d", "2h")


def test_wait_for_defaults() -> None:
    """WaitFor's timeout and schema default to None and are keyword-only."""
    cmd = WaitFor("w", "evt")
    assert (cmd.timeout, cmd.schema) == (None, None)
    with pytest.raises(TypeError):
        WaitFor("w", "evt", "1h")  # type: ignore[misc]


def test_poll_defaults_to_thirty_seconds() -> None:
    """Poll's interval defaults to 30 s and timeout to None."""
    cmd = Poll("p", boom)
    assert (cmd.interval, cmd.timeout) == ("30s", None)


def test_sleep_is_delay() -> None:
    """``Sleep`` is the same class as ``Delay``."""
    assert Sleep is Delay and Sleep("s", "1m") == Delay("s", "1m")


def test_all_keeps_commands_in_order() -> None:
    """``All(*commands)`` keeps its parts in argument order."""
    parts = (Run("a", boom), Delay("b", "1s"), WaitFor("c", "e"))
    assert All(*parts).commands == parts


def test_child_fields() -> None:
    """``Child(step_id, workflow, input, resource_id=)``."""
    cmd = Child("c", "other-workflow", {"x": 1}, resource_id="r")
    assert (cmd.step_id, cmd.workflow, cmd.input, cmd.resource_id) == ("c", "other-workflow", {"x": 1}, "r")


def test_every_step_command_has_a_kind() -> None:
    """Each step command maps to the StepRecord kind of SPEC §4."""
    assert {KIND_OF[c] for c in (Run, WaitFor, WaitUntil, Delay, Pause, Poll, Transaction, Child)} == {
        "run", "wait_for", "wait_until", "delay", "pause", "poll", "transaction", "child",
    }  # fmt: skip
    assert All not in KIND_OF


def test_poll_result_fields() -> None:
    """``PollResult(timed_out, data)`` with data defaulting to None."""
    assert PollResult(True) == PollResult(timed_out=True, data=None)
    assert PollResult(False, {"a": 1}).data == {"a": 1}


# ------------------------------------------------------------------------------------------ Retry


def test_retry_defaults() -> None:
    """Retry defaults: 3 attempts, 1 s initial, factor 2, 1 h cap, 10 % jitter."""
    r = Retry()
    assert (r.max_attempts, r.factor, r.jitter, r.non_retryable) == (3, 2.0, 0.1, ())
    assert r.initial == pendulum.duration(seconds=1) and r.max_delay == pendulum.duration(hours=1)


def test_retry_parses_durations() -> None:
    """Retry's ``initial`` and ``max_delay`` accept duration strings."""
    r = Retry(initial="500ms", max_delay="2m")
    assert r.initial == pendulum.duration(microseconds=500_000) and r.max_delay == pendulum.duration(
        minutes=2
    )


def test_retry_rejects_bad_values() -> None:
    """``max_attempts`` below 1, jitter outside 0–1 and bad durations are rejected, naming the argument."""
    with pytest.raises(InvalidArgumentError, match="max_attempts"):
        Retry(max_attempts=0)
    with pytest.raises(InvalidArgumentError, match="jitter"):
        Retry(jitter=1.5)
    with pytest.raises(InvalidDurationError, match="Invalid duration") as caught:
        Retry(initial="soon")
    assert "initial" in str(caught.value)


def test_retry_backoff_is_exponential_and_capped() -> None:
    """Without jitter the waits are initial × factor^(n−1), capped at ``max_delay``."""
    r = Retry(max_attempts=10, initial="1s", factor=3, max_delay="20s", jitter=0)
    waits = [r.backoff(n, "seed").total_seconds() for n in range(1, 6)]
    assert waits == [1, 3, 9, 20, 20]


def test_retry_jitter_is_deterministic_and_bounded() -> None:
    """Jitter is derived from the seed: the same run and step always wait the same, within ±jitter."""
    r = Retry(initial="10s", jitter=0.5)
    first = [r.backoff(n, "run-1:step").total_seconds() for n in range(1, 4)]
    again = [r.backoff(n, "run-1:step").total_seconds() for n in range(1, 4)]
    assert first == again
    for n, wait in enumerate(first, start=1):
        base = 10 * 2 ** (n - 1)
        assert base * 0.5 <= wait <= base * 1.5


def test_retry_non_retryable_classes() -> None:
    """``retryable`` is false for listed exception classes and their subclasses."""
    r = Retry(non_retryable=[LookupError])
    assert r.non_retryable == (LookupError,)
    assert not r.retryable(KeyError("k")) and r.retryable(ValueError("v"))
