"""The engine's worker: claims runs and hands them to ``RunProcessor`` on a thread pool.

A dispatcher thread waits for work (LISTEN/NOTIFY, the next due time, or a 1 s fallback poll for
lost notifications); worker threads, once done with a run, claim the next one themselves while
every slot is taken, so a busy engine does not go back through the dispatcher for every run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pendulum

from .definition import Workflow
from .errors import StorageError
from .limits import limited_ids
from .logs import run_extra
from .processor import RunProcessor, Settings
from .schedule_store import FireResult
from .schedules import ON_TIME
from .store import Claimed, Lease
from .threads import DaemonPool

log = logging.getLogger("pgflow.worker")
FALLBACK_POLL = 1.0  # seconds: bound on latency when a notification is lost
DISPATCH_RETRY = 0.5  # seconds between claims while the database fails
FIRE_LIMIT = 100  # schedules fired per transaction
SETTLE = 0.05  # seconds a dispatcher whose claim found work waits for more before reading next_due


def idle_timeout(due: pendulum.DateTime | None, now: pendulum.DateTime, found_work: bool) -> float:
    """How long an idle dispatcher sleeps (unless woken): until ``due``, at most ``FALLBACK_POLL``.
    After a claim that found work, ``due`` is the one read last, not read again (those runs are
    starting: a read now would compete with them), and the sleep is at most ``SETTLE``, then the
    dispatcher claims and reads it again: a timer announced meanwhile is at most that late."""
    cap = SETTLE if found_work else FALLBACK_POLL
    return cap if due is None else max(0.0, min(cap, (due - now).total_seconds()))


def worker_owner() -> str:
    """A worker's lease owner: host, process and a random suffix (several workers per process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ScheduleTimer:
    """When a dispatcher fires schedules (SPEC §16): at the earliest next tick it knows of, and at
    least every ``FALLBACK_POLL`` seconds (to learn of schedules created or resumed elsewhere). Firing
    is a store call of its own, off the claim and commit path."""

    RETRY = pendulum.duration(seconds=0.05)  # a due schedule another engine is firing: look again soon

    def __init__(self) -> None:
        self.next_tick: pendulum.DateTime | None = None
        self._refresh_at = 0.0  # time.monotonic()

    def due(self, now: pendulum.DateTime) -> bool:
        return time.monotonic() >= self._refresh_at or (self.next_tick is not None and self.next_tick <= now)

    def fired(self, result: FireResult, now: pendulum.DateTime) -> None:
        self._refresh_at = time.monotonic() + FALLBACK_POLL
        tick = result.next_tick_at
        if result.more:
            tick = now  # more schedules are due than one transaction fires: at once again
        elif tick is not None and tick <= now:
            tick = now + self.RETRY  # still due: another engine holds it (its tick starts one run)
        self.next_tick = tick

    def bound(self, now: pendulum.DateTime, timeout: float) -> float:
        """An idle wait of ``timeout`` seconds, shortened to end at the next tick or refresh."""
        until = self._refresh_at - time.monotonic()
        if self.next_tick is not None:
            until = min(until, (self.next_tick - now).total_seconds())
        return max(0.0, min(timeout, until))


class Worker:
    def __init__(
        self, store: Any, workflows: Mapping[str, Workflow], processor: RunProcessor, settings: Settings,
        concurrency: int, clock: Any,
    ) -> None:  # fmt: skip
        self.owner = worker_owner()
        self.store = store
        self.workflows = workflows
        self.processor = processor
        self.settings = settings
        self.concurrency = concurrency
        self.clock = clock
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._saturated = False  # the dispatcher waits for a free slot (see _work)
        self._stopped = threading.Event()  # set once in-flight work is done: heartbeats end
        self._active: dict[str, Lease] = {}
        self._claiming = 0  # slots reserved by claims in flight: what they return becomes active
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._abort = threading.Event()  # a second signal: stop waiting for in-flight steps
        self._pool = DaemonPool(concurrency, "pgflow-worker")
        self._ticks = ScheduleTimer()
        self._due: pendulum.DateTime | None = None  # the next due time read last (see idle_timeout)

    def start(self) -> None:
        self.store.listen()  # LISTEN before the first claim, so no wake-up sent after it is missed
        for target, name in ((self._dispatch_loop, "dispatcher"), (self._heartbeat_loop, "heartbeat")):
            thread = threading.Thread(target=target, name=f"pgflow-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("pgflow worker %s started (concurrency %d): %s", self.owner, self.concurrency,
                 ", ".join(sorted(self.workflows)) or "no workflows")  # fmt: skip

    def nudge(self) -> None:
        """A run was started here. While notifications arrive, its NOTIFY wakes the dispatcher already
        (a second wake-up would only cost a redundant claim, competing with the run it started)."""
        if not self.store.notifications:
            self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """In-flight steps finish and are recorded, their runs are released, nothing new starts.

        Bounded by ``timeout`` (and cut short by :meth:`abort`): a step still running then is
        abandoned (its thread is a daemon: it does not hold the process); its run is taken over by
        another worker when the lease, no longer renewed, expires."""
        deadline = time.monotonic() + timeout
        self.stopping.set()
        self._wake.set()
        for dispatcher in self._threads[:1]:
            dispatcher.join(timeout)  # it hands what its last claim returned to the pool, then exits
        self._pool.shutdown()  # queued runs still start, see `stopping` and release at once
        self._say_what_stop_waits_for(timeout)
        while self._busy() and time.monotonic() < deadline and not self._abort.is_set():
            time.sleep(0.01)  # heartbeats keep the leases of in-flight runs alive meanwhile
        self._stopped.set()
        for thread in self._threads[1:]:
            thread.join(max(0.0, min(1.0, deadline - time.monotonic())))
        if self._busy():
            with self._lock:
                left = sorted(self._active)
            log.warning("pgflow worker %s stopped with %d run(s) still executing a step, left to their "
                        "lease: %s", self.owner, len(left), ", ".join(left))  # fmt: skip
        log.info("pgflow worker %s stopped", self.owner)

    def abort(self) -> None:
        """Stop waiting for in-flight steps: :meth:`stop` returns at once (their runs are left to
        their leases)."""
        self._abort.set()

    def _say_what_stop_waits_for(self, timeout: float) -> None:
        with self._lock:
            running = sorted(self._active)
        if running:
            log.info("pgflow worker %s stopping: waiting up to %gs for %d run(s) executing a step: %s",
                     self.owner, timeout, len(running), ", ".join(running))  # fmt: skip
        else:
            log.info("pgflow worker %s stopping: no step is executing", self.owner)

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._active) or self._claiming > 0

    # claiming ------------------------------------------------------------------------------------

    def _free(self) -> int:
        with self._lock:
            return self.concurrency - len(self._active) - self._claiming

    def _claim(self, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` runs, never more than the free slots: a run claimed beyond them would
        wait, leased and heartbeated, until a worker thread found nothing else to claim."""
        with self._lock:
            limit = min(limit, self.concurrency - len(self._active) - self._claiming)
            if limit <= 0 or self.stopping.is_set() or not self.workflows:
                return []
            self._claiming += limit
        claimed: list[Claimed] = []
        try:
            claimed = self.store.claim(
                self.owner,
                list(self.workflows),
                self.clock.now(),
                self.settings.lease,
                limit,
                limited_ids(self.workflows),
            )
        finally:
            with self._lock:
                self._claiming -= limit
                for item in claimed:
                    self._active[item.run.id] = item.lease
        return claimed

    def _dispatch_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._dispatch_once()
            except StorageError as exc:  # the database is away: try again soon (resume within 2 s)
                log.warning("pgflow dispatcher: %s (retrying in %g s)", exc, DISPATCH_RETRY)
                self.stopping.wait(DISPATCH_RETRY)
            except Exception:
                log.exception("pgflow dispatcher error (retrying in %g s)", DISPATCH_RETRY)
                self.stopping.wait(DISPATCH_RETRY)

    def _dispatch_once(self) -> None:
        self._fire_schedules()
        free = self._free()
        claimed = self._claim(free)
        for item in claimed:
            self._submit(item)
        if free <= 0 or len(claimed) == free:
            with self._lock:
                self._saturated = len(self._active) + self._claiming >= self.concurrency
            if self._saturated:
                # full: busy workers claim their next runs themselves; one that finds nothing
                # sets _wake. (Asking for next_due here would spin: ready runs are always due.)
                self._wake.wait(self._ticks.bound(self.clock.now(), FALLBACK_POLL))
                self._wake.clear()
                self._saturated = False
                return
        self._idle_wait(found_work=bool(claimed))

    def _submit(self, item: Claimed) -> None:
        try:
            self._pool.submit(self._work, item)
        except RuntimeError:  # stop() gave up waiting for this thread and shut the pool down
            self._work(item)  # the processor sees `stopping` and releases the run at once

    def _fire_schedules(self) -> None:
        """Start the runs of the schedule ticks that are due (SPEC §16)."""
        now = self.clock.now()
        if self._ticks.due(now):
            self._ticks.fired(self.store.fire_schedules(now, ON_TIME, FIRE_LIMIT), now)

    def _idle_wait(self, found_work: bool) -> None:
        if not found_work:
            self._due = self.store.next_due(list(self.workflows)) if self.workflows else None
        now = self.clock.now()
        timeout = self._ticks.bound(now, idle_timeout(self._due, now, found_work))
        if timeout <= 0 or self._wake.is_set():
            self._wake.clear()
            return
        waited = 0.0
        while waited < timeout and not self._wake.is_set():  # LISTEN in short slices, so nudges are seen
            step = min(0.05, timeout - waited)
            if self.store.wait_for_wakeup(step):
                break
            waited += step
        self._wake.clear()

    def _work(self, item: Claimed) -> None:
        current: Claimed | None = item
        try:
            while current is not None:
                try:
                    self.processor.process(current)
                except StorageError as exc:  # anything else already failed the run (no poison runs)
                    self._storage_failed(current, exc)
                except Exception:
                    log.exception("run %s: unexpected error in the worker; the run is taken over when its "
                                  "lease expires", current.run.id, extra=run_extra(current.run))  # fmt: skip
                finally:
                    with self._lock:
                        self._active.pop(current.run.id, None)
                current = self._claim_next()
        finally:
            with self._lock:
                saturated = self._saturated
            if saturated:
                self._wake.set()  # a slot is free: the waiting dispatcher looks for work again

    def _storage_failed(self, item: Claimed, exc: StorageError) -> None:
        """The database failed while a run was handled; after a stop that gave up on the run, that is
        only its late commit meeting the closed pool (expected: the run is left to its lease)."""
        if self._stopped.is_set():
            log.debug("run %s: its step finished after the worker stopped; left to its lease",
                      item.run.id, extra=run_extra(item.run))  # fmt: skip
            return
        log.warning("run %s: the database failed (%s); the run is taken over when its lease expires",
                    item.run.id, exc, extra=run_extra(item.run))  # fmt: skip

    def _claim_next(self) -> Claimed | None:
        """Stay busy without a trip through the dispatcher while it is saturated (more runs may be
        ready than slots); otherwise it claims in batches, when work is announced or due, and a claim
        here would mostly come back empty. On a database error, leave it the work."""
        with self._lock:
            saturated = self._saturated
        if not saturated:
            return None
        try:
            more = self._claim(1)
        except StorageError as exc:
            log.warning("pgflow: claiming the next run failed (%s); the dispatcher will retry", exc)
            return None
        except Exception:
            log.exception("pgflow: claiming the next run failed; the dispatcher will retry")
            return None
        return more[0] if more else None

    # leases ------------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.settings.lease.total_seconds() / 5)  # leaves > RENEW_BELOW of it
        while not self._stopped.wait(interval):
            with self._lock:
                leases = list(self._active.values())
            if not leases:
                continue
            try:
                lost = self.store.heartbeat(leases, self.clock.now(), self.settings.lease)
            except Exception:
                log.exception("pgflow heartbeat failed")
                continue
            with self._lock:  # a run that ended (and left _active) meanwhile lost nothing
                still = {lease.run_id for lease in leases if self._active.get(lease.run_id) == lease}
            for run_id in lost & still:
                log.warning("pgflow worker %s lost the lease of run %s", self.owner, run_id)
