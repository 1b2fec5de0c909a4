"""``Engine(retention=...)``: an engine's periodic pruning pass (SPEC §15), off the hot path.

About once an hour (the first pass within a minute of ``start``), a thread of the ``Engine``
(:class:`Pruner`) or a task on the ``AsyncEngine``'s loop (:class:`AsyncPruner`) deletes the
terminal runs that ended more than ``retention`` ago, by the batches of ``prune``, each batch under
the schema's retention advisory lock: of several engines, one prunes, the others find the lock taken
and skip that pass. The pass (:func:`retention_pass`) and its timing (:func:`pass_delays`) are
written once; the two drivers only wait and perform store calls. The dispatcher and the worker
threads never wait for it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pendulum

from .errors import StorageError
from .operations import OperationSteps, OpGen
from .records import TERMINAL

__all__ = ["FIRST_PASS", "RETENTION_INTERVAL", "AsyncPruner", "Pruner", "pass_delays", "retention_pass"]

log = logging.getLogger("pgflow.retention")

RETENTION_INTERVAL = 3600.0  # seconds between two passes of one engine (± 10 %)
FIRST_PASS = (
    60.0  # the first pass comes within this many seconds of start (engines redeployed hourly prune too)
)
PASSES_KEPT = 100  # Pruner.passes keeps the results of this many latest passes (bounded memory)
STOP_WAIT = 5.0  # seconds stop() waits for a pass to finish its batch (a batch holds its locks < 1 s)


def pass_delays(interval: float, rng: random.Random | None = None) -> Iterator[float]:
    """Seconds to wait before each pass: the first within ``FIRST_PASS`` (or ``interval`` when
    shorter), then ``interval`` ± 10 % (random, so engines started together drift apart)."""
    pick = rng or random.Random()
    yield pick.uniform(0.0, min(FIRST_PASS, interval))
    while True:
        yield interval * pick.uniform(0.9, 1.1)


def retention_pass(host: OperationSteps, older_than: pendulum.Duration) -> OpGen[int | None]:
    """One pass: every terminal run that ended more than ``older_than`` ago (by the host's clock), in
    exclusive batches; how many went, or None when another engine held the lock from the start."""
    query = host._prune_query(older_than, TERMINAL, None, None)
    return (yield from host._prune_batches(query, exclusive=True))


def _report(deleted: int | None, older_than: pendulum.Duration) -> None:
    if deleted is None:
        log.debug("pgflow retention: another engine is pruning this schema; pass skipped")
    elif deleted:
        log.info("pgflow retention: deleted %d run(s) that ended more than %s ago", deleted, older_than)
    else:
        log.debug("pgflow retention: no run ended more than %s ago", older_than)


def _failed(exc: Exception) -> None:
    if isinstance(exc, StorageError):  # the database is away: the next pass tries again
        log.warning("pgflow retention pass failed: %s (next pass in about an hour)", exc)
    else:
        log.error("pgflow retention pass failed", exc_info=exc)


class Pruner:
    """The ``Engine``'s passes, on a daemon thread. ``passes``: what the latest passes that did not fail
    returned (runs deleted, or None when another engine held the lock), the last ``PASSES_KEPT`` only:
    an engine runs for months. Read it from another thread through ``list(passes)`` (atomic), not by
    iterating it (a deque appended to while iterated raises RuntimeError)."""

    def __init__(
        self, host: OperationSteps, older_than: pendulum.Duration, store_of: Callable[[], Any],
        interval: float | None = None,
    ) -> None:  # fmt: skip
        self.host, self.older_than, self.store_of = host, older_than, store_of
        self.interval = RETENTION_INTERVAL if interval is None else interval
        self.passes: deque[int | None] = deque(maxlen=PASSES_KEPT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pgflow-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No further batch starts; waits (a little) for the one in flight."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)

    def _loop(self) -> None:
        for delay in pass_delays(self.interval):
            if self._stop.wait(delay):
                return
            self.run_pass()

    def run_pass(self) -> int | None:
        answer: Any = None
        try:
            gen = retention_pass(self.host, self.older_than)
            while True:
                try:
                    call = gen.send(answer)
                except StopIteration as done:
                    deleted: int | None = done.value
                    break
                if self._stop.is_set():  # stopping: the engine closes its pool after us
                    gen.close()
                    return None
                answer = call(self.store_of())
        except Exception as exc:
            _failed(exc)
            return None
        self.passes.append(deleted)
        _report(deleted, self.older_than)
        return deleted


class AsyncPruner:
    """The ``AsyncEngine``'s passes, as a task on its loop (each store call awaited); ``passes`` as
    :class:`Pruner`'s."""

    def __init__(
        self, host: OperationSteps, older_than: pendulum.Duration, store_of: Callable[[], Awaitable[Any]],
        interval: float | None = None,
    ) -> None:  # fmt: skip
        self.host, self.older_than, self.store_of = host, older_than, store_of
        self.interval = RETENTION_INTERVAL if interval is None else interval
        self.passes: deque[int | None] = deque(maxlen=PASSES_KEPT)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="pgflow-retention")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()

    async def _loop(self) -> None:
        for delay in pass_delays(self.interval):
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return
            except TimeoutError:
                pass
            await self.run_pass()

    async def run_pass(self) -> int | None:
        answer: Any = None
        try:
            gen = retention_pass(self.host, self.older_than)
            while True:
                try:
                    call = gen.send(answer)
                except StopIteration as done:
                    deleted: int | None = done.value
                    break
                if self._stop.is_set():
                    gen.close()
                    return None
                answer = call(await self.store_of())
                if inspect.isawaitable(answer):
                    answer = await answer
        except Exception as exc:
            _failed(exc)
            return None
        self.passes.append(deleted)
        _report(deleted, self.older_than)
        return deleted
