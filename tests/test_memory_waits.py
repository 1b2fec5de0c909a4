"""The in-memory store's wake-ups (``wait_for_wakeup``, ``watch_run`` waiters): every write wakes
every waiter at once, a wait without a write lasts its timeout, and no write is reported twice.
(The Postgres store's LISTEN-based versions are in ``test_store_contract.py``.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pendulum
import pytest

from pgflow.memory import MemoryStore
from pgflow.store import NewRun

T0 = pendulum.datetime(2024, 1, 1, tz="UTC")
PROMPT = 5.0  # a wake-up "at once" comes well within this many seconds (the waits below allow 30)
AT_ONCE = 0.9  # a call that does not wait returns within this (waiting would take a second or more)


def start(store: MemoryStore, run_id: str) -> None:
    store.start_run(NewRun(run_id, "wf", None, None, 0, 1.0, None, None, T0))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def soon() -> Iterator[Callable[[Callable[[], object]], None]]:
    """Runs a write on another thread 50 ms from now (joined at the end of the test)."""
    timers: list[threading.Timer] = []

    def schedule(write: Callable[[], object]) -> None:
        timer = threading.Timer(0.05, write)
        timers.append(timer)
        timer.start()

    yield schedule
    for timer in timers:
        timer.join()


def timed(wait: Callable[[], bool]) -> tuple[bool, float]:
    began = time.monotonic()
    result = wait()
    return result, time.monotonic() - began


def test_wait_for_wakeup_lasts_its_timeout_when_nothing_is_written(store: MemoryStore) -> None:
    """Without a write, wait_for_wakeup returns False after its timeout."""
    woken, took = timed(lambda: store.wait_for_wakeup(0.05))
    assert woken is False and took >= 0.04


def test_wait_for_wakeup_returns_at_once_when_a_write_happens(
    store: MemoryStore, soon: Callable[[Callable[[], object]], None]
) -> None:
    """A write from another thread (a run started) wakes wait_for_wakeup at once, with True."""
    soon(lambda: start(store, "r1"))
    woken, took = timed(lambda: store.wait_for_wakeup(30))
    assert woken is True and took < PROMPT


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_wait_for_wakeup_without_time_left_returns_at_once(store: MemoryStore, timeout: float) -> None:
    """A zero or negative timeout (a deadline already past) does not wait."""
    woken, took = timed(lambda: store.wait_for_wakeup(timeout))
    assert woken is False and took < AT_ONCE


def test_a_run_waiter_reports_each_write_once(
    store: MemoryStore, soon: Callable[[Callable[[], object]], None]
) -> None:
    """A ``watch_run`` waiter: nothing written since it was registered → False after the timeout;
    a write → True at once; that write is not reported again; no time left → False at once."""
    start(store, "r1")
    with store.watch_run("r1") as waiter:
        woken, took = timed(lambda: waiter.wait(0.05))
        assert woken is False and took >= 0.04
        soon(lambda: store.change("r1", None, "cancel", None, T0))
        woken, took = timed(lambda: waiter.wait(30))
        assert woken is True and took < PROMPT
        assert waiter.wait(0.05) is False
        woken, took = timed(lambda: waiter.wait(0) or waiter.wait(-1.0))
        assert woken is False and took < AT_ONCE
