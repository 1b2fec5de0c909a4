"""The asyncio engine's worker: claims runs and drives each as a task on the event loop.

The rules are the threaded ``Worker``'s: claim no more than the free slots, a run's task claims the
next run itself when it is done (a busy engine does not go back through the dispatcher for every
run), the dispatcher waits for a LISTEN wake-up, the next due time or a 1 s fallback poll, and a
heartbeat task keeps the leases of the runs in flight. Stopping lets in-flight runs finish for up to
a timeout, then cancels their tasks; their runs are left to their leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import pendulum

from .async_processor import AsyncRunProcessor
from .definition import Workflow
from .errors import StorageError
from .limits import limited_ids
from .logs import run_extra
from .processor import Settings
from .schedules import ON_TIME
from .store import Claimed, Lease
from .worker import DISPATCH_RETRY, FALLBACK_POLL, FIRE_LIMIT, ScheduleTimer, idle_timeout, worker_owner

__all__ = ["AsyncWorker"]

log = logging.getLogger("pgflow.worker")


class AsyncWorker:
    def __init__(
        self, store: Any, workflows: Mapping[str, Workflow], processor: AsyncRunProcessor, settings: Settings,
        concurrency: int, clock: Any, stopping: asyncio.Event,
    ) -> None:  # fmt: skip
        self.owner = worker_owner()
        self.store = store
        self.workflows = workflows
        self.processor = processor
        self.settings = settings
        self.concurrency = concurrency
        self.clock = clock
        self.stopping = stopping
        self._wake = asyncio.Event()
        self._active: dict[str, Lease] = {}
        self._claiming = 0
        self._runs: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._saturated = False  # every slot was taken when the dispatcher last claimed
        self._ticks = ScheduleTimer()
        self._due: pendulum.DateTime | None = None  # the next due time read last (see worker.idle_timeout)

    async def start(self) -> None:
        await self.store.listen()  # LISTEN before the first claim: no wake-up sent after it is missed
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._dispatch_loop(), name="pgflow-dispatcher"),
            loop.create_task(self._heartbeat_loop(), name="pgflow-heartbeat"),
        ]
        log.info("pgflow worker %s started on the event loop (concurrency %d): %s", self.owner,
                 self.concurrency, ", ".join(sorted(self.workflows)) or "no workflows")  # fmt: skip

    def nudge(self) -> None:
        """A run was started here: without notifications, wake the dispatcher (see ``Worker.nudge``)."""
        if not self.store.notifications:
            self._wake.set()

    async def stop(self, timeout: float, abort: asyncio.Event) -> None:
        """In-flight steps finish and are recorded (for at most ``timeout``, or until ``abort``);
        nothing new starts; what still runs then is cancelled and left to its lease."""
        deadline = time.monotonic() + timeout
        self.stopping.set()
        self._wake.set()
        dispatcher = self._tasks[0] if self._tasks else None
        if dispatcher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(dispatcher), timeout)
        running = sorted(self._active)
        if running:
            log.info("pgflow worker %s stopping: waiting up to %gs for %d run(s) executing a step: %s",
                     self.owner, timeout, len(running), ", ".join(running))  # fmt: skip
        else:
            log.info("pgflow worker %s stopping: no step is executing", self.owner)
        while self._runs and time.monotonic() < deadline and not abort.is_set():
            await asyncio.wait(list(self._runs), timeout=min(0.05, max(0.0, deadline - time.monotonic())))
        left = sorted(self._active)
        for task in list(self._runs):
            task.cancel()
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._runs, *self._tasks, return_exceptions=True)
        if left:
            log.warning("pgflow worker %s stopped with %d run(s) still executing a step, left to their "
                        "lease: %s", self.owner, len(left), ", ".join(left))  # fmt: skip
        log.info("pgflow worker %s stopped", self.owner)

    # claiming ------------------------------------------------------------------------------------

    def _free(self) -> int:
        return self.concurrency - len(self._active) - self._claiming

    async def _claim(self, limit: int) -> list[Claimed]:
        limit = min(limit, self._free())
        if limit <= 0 or self.stopping.is_set() or not self.workflows:
            return []
        self._claiming += limit
        claimed: list[Claimed] = []
        try:
            claimed = await self.store.claim(
                self.owner,
                list(self.workflows),
                self.clock.now(),
                self.settings.lease,
                limit,
                limited_ids(self.workflows),
            )
        finally:
            self._claiming -= limit
            for item in claimed:
                self._active[item.run.id] = item.lease
        return claimed

    async def _dispatch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._dispatch_once()
            except StorageError as exc:
                log.warning("pgflow dispatcher: %s (retrying in %g s)", exc, DISPATCH_RETRY)
                await _sleep_unless(self.stopping, DISPATCH_RETRY)
            except Exception:
                log.exception("pgflow dispatcher error (retrying in %g s)", DISPATCH_RETRY)
                await _sleep_unless(self.stopping, DISPATCH_RETRY)

    async def _dispatch_once(self) -> None:
        await self._fire_schedules()
        free = self._free()
        claimed = await self._claim(free)
        for item in claimed:
            task = asyncio.get_running_loop().create_task(self._work(item), name=f"pgflow-run-{item.run.id}")
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
        if self._free() <= 0:  # full: running tasks claim their next runs; a free slot sets _wake
            self._saturated = True
            await _wait_event(self._wake, self._ticks.bound(self.clock.now(), FALLBACK_POLL))
            self._wake.clear()
            self._saturated = False
            return
        await self._idle_wait(found_work=bool(claimed))

    async def _fire_schedules(self) -> None:
        """Start the runs of the schedule ticks that are due (SPEC §16)."""
        now = self.clock.now()
        if self._ticks.due(now):
            self._ticks.fired(await self.store.fire_schedules(now, ON_TIME, FIRE_LIMIT), now)

    async def _idle_wait(self, found_work: bool) -> None:
        if not found_work:
            self._due = await self.store.next_due(list(self.workflows)) if self.workflows else None
        now = self.clock.now()
        timeout = self._ticks.bound(now, idle_timeout(self._due, now, found_work))
        if timeout <= 0 or self._wake.is_set():
            self._wake.clear()
            return
        wakeup = asyncio.ensure_future(self.store.wait_for_wakeup(timeout))
        nudged = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({wakeup, nudged}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (wakeup, nudged):
                waiting.cancel()
            await asyncio.gather(wakeup, nudged, return_exceptions=True)
        self._wake.clear()

    async def _work(self, item: Claimed) -> None:
        current: Claimed | None = item
        try:
            while current is not None:
                try:
                    await self.processor.process(current)
                except StorageError as exc:
                    if not self._stopped.is_set():
                        log.warning("run %s: the database failed (%s); the run is taken over when its lease "
                                    "expires", current.run.id, exc, extra=run_extra(current.run))  # fmt: skip
                except Exception:
                    log.exception("run %s: unexpected error in the worker; the run is taken over when its "
                                  "lease expires", current.run.id, extra=run_extra(current.run))  # fmt: skip
                finally:
                    self._active.pop(current.run.id, None)
                current = await self._claim_next()
        finally:
            if self._saturated:
                self._wake.set()  # a slot is free: the dispatcher waiting for one looks for work again

    async def _claim_next(self) -> Claimed | None:
        """Stay busy while the dispatcher is saturated (more runs may be ready than slots); otherwise
        the dispatcher claims in batches, when work is announced or due."""
        if not self._saturated:
            return None
        try:
            more = await self._claim(1)
        except Exception as exc:
            log.warning("pgflow: claiming the next run failed (%s); the dispatcher will retry", exc)
            return None
        return more[0] if more else None

    # leases ------------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.settings.lease.total_seconds() / 5)  # leaves > RENEW_BELOW of it
        while not await _wait_event(self._stopped, interval):
            leases = list(self._active.values())
            if not leases:
                continue
            try:
                lost = await self.store.heartbeat(leases, self.clock.now(), self.settings.lease)
            except Exception:
                log.exception("pgflow heartbeat failed")
                continue
            still = {lease.run_id for lease in leases if self._active.get(lease.run_id) == lease}
            for run_id in lost & still:
                log.warning("pgflow worker %s lost the lease of run %s", self.owner, run_id)


async def _wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True when it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    await _wait_event(event, seconds)
