"""``Engine``: registers workflows, runs workers, and has every client method (SPEC §4)."""

from __future__ import annotations

import logging
import signal
import threading
import types
from collections.abc import Iterable, Mapping
from typing import Any

from .arguments import check_clock, check_int, shown
from .backend import Backend
from .clock import SystemClock
from .definition import Workflow, check_workflows
from .durations import check_duration, check_optional_duration
from .errors import InvalidArgumentError, WorkflowDefinitionError
from .execution import StepCaller
from .operations import Operations
from .processor import RunProcessor, Settings
from .retention import Pruner
from .schedules import Schedule, check_schedules
from .store import RunRow, Store
from .worker import Worker

__all__ = ["MAX_CONCURRENCY", "Engine"]

log = logging.getLogger("pgflow.worker")

MAX_CONCURRENCY = 10_000  # worker threads of one engine; far beyond what one process can use


class Engine(Operations):
    def __init__(
        self, dsn: str | None = None, *, pool: Any = None, workflows: Iterable[Workflow] = (),
        schedules: Iterable[Schedule] = (), concurrency: int = 10, schema: str = "pgflow", lease: Any = "30s",
        min_poll_interval: Any = "1s", clock: Any = None, prepare: bool = True, listen_dsn: str | None = None,
        retention: Any = None,
    ) -> None:  # fmt: skip
        check_int(concurrency, "concurrency", 1, MAX_CONCURRENCY)
        self.retention = check_optional_duration(retention, "retention")  # SPEC §15: prune passes
        workflows = check_workflows(workflows)
        self._schedules = check_schedules(schedules)  # upserted at start (SPEC §16)
        self._backend = Backend(
            dsn, pool, schema, max_size=concurrency + 4, prepare=prepare, listen_dsn=listen_dsn
        )
        self._ops_clock = check_clock(clock) if clock is not None else SystemClock()
        self.settings = Settings(
            check_duration(lease, "lease"), check_duration(min_poll_interval, "min_poll_interval")
        )
        self.concurrency = concurrency
        self._workflows: dict[str, Workflow] = {}
        self._lock = threading.RLock()
        self._worker: Worker | None = None
        self._stopping_worker: Worker | None = None
        self._caller = StepCaller()
        self._stopped = threading.Event()
        self._pruner: Pruner | None = None
        for wf in workflows:
            self.register(wf)

    @property
    def clock(self) -> Any:
        return self._ops_clock

    @property
    def schema(self) -> str:
        return self._backend.schema

    # definitions ---------------------------------------------------------------------------------

    def register(self, workflow: Workflow) -> None:
        """Add a definition (before or after start). Same object again: no-op."""
        if not isinstance(workflow, Workflow):
            raise WorkflowDefinitionError(
                f"register() takes a Workflow (from @workflow), got {shown(workflow)}"
            )
        with self._lock:
            known = self._workflows.get(workflow.id)
            if known is workflow:
                return
            if known is not None:
                raise WorkflowDefinitionError(
                    f"another workflow is already registered with id {workflow.id!r}"
                )
            self._workflows[workflow.id] = workflow
            if self._backend.is_open:
                self._backend.store().register_workflow(
                    workflow.id, workflow.steps, self._now(), workflow.settings
                )

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        return types.MappingProxyType(self._workflows)

    # lifecycle -------------------------------------------------------------------------------------

    def _ops_store(self) -> Store:
        fresh = not self._backend.is_open
        store: Store = self._backend.store()
        if fresh:
            with self._lock:
                for wf in self._workflows.values():
                    store.register_workflow(wf.id, wf.steps, self._now(), wf.settings)
        return store

    def _ops_workflows(self) -> Mapping[str, Workflow]:
        return self._workflows

    def _ops_started(self, run: RunRow) -> None:
        if self._worker is not None:
            self._worker.nudge()

    def _resolve(self, target: Any) -> Any:
        return self._target(target, self._ops_store()) if isinstance(target, str) else target

    def start(self, worker: bool = True) -> Engine:
        """Migrate, register workflows and (unless ``worker=False``) start background workers."""
        if not isinstance(worker, bool):
            raise InvalidArgumentError(f"worker must be True or False, got {shown(worker)}")
        store = self._ops_store()
        self._do(self._put_schedules_steps(self._schedules))
        with self._lock:
            if worker and self._worker is None:
                self._stopped.clear()
                stopping = threading.Event()
                processor = RunProcessor(store, self._workflows, self._ops_clock, self.settings, self._caller,
                                         resolve=self._resolve, stopping=stopping)  # fmt: skip
                self._worker = Worker(store, self._workflows, processor, self.settings, self.concurrency,
                                      self._ops_clock)  # fmt: skip
                self._worker.stopping = stopping
                self._worker.start()
                if self.retention is not None:  # the workers prune, on a thread of their own
                    self._pruner = Pruner(self, self.retention, self._ops_store)
                    self._pruner.start()
        return self

    def run_worker(self, *, shutdown_timeout: Any = "30s") -> None:
        """Run workers in the foreground until SIGINT/SIGTERM, then stop gracefully: in-flight steps
        get up to ``shutdown_timeout`` to finish; a second signal stops at once."""
        seconds = stop_seconds(shutdown_timeout, "shutdown_timeout")
        self.start(worker=True)
        stop_asked = threading.Event()
        signals: list[int] = []

        def on_signal(signum: int, _frame: Any) -> None:
            signals.append(signum)
            if len(signals) > 1:
                self._abort_stop()  # the second signal: stop waiting for in-flight steps
            stop_asked.set()

        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            while not stop_asked.wait(0.5) and not self._stopped.is_set():
                pass
            if signals:
                log.info("received %s: stopping gracefully (up to %gs for in-flight steps); "
                         "send it again to stop at once", signal.Signals(signals[0]).name, seconds)  # fmt: skip
            self.stop(seconds)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _abort_stop(self) -> None:
        with self._lock:
            worker = self._worker or self._stopping_worker
        if worker is not None:
            worker.abort()

    def stop(self, timeout: Any = "30s") -> None:
        """Finish in-flight steps (for at most ``timeout``, a duration), release their runs, close the
        pool. A step still running then is abandoned and its run left to its lease."""
        seconds = stop_seconds(timeout, "timeout")
        with self._lock:
            worker, self._worker = self._worker, None
            pruner, self._pruner = self._pruner, None
            self._stopping_worker = worker
        try:
            if pruner is not None:
                pruner.stop()
            if worker is not None:
                worker.stop(seconds)
        finally:
            self._stopping_worker = None
            self._stopped.set()
            self._caller.close()
            self._backend.close()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_seconds(value: Any, name: str) -> float:
    """A stop timeout in seconds: a duration (``"30s"``, ``timedelta``, a number), zero allowed."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    return check_duration(value, name).total_seconds()
