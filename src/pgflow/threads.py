"""Threads that never keep the process alive: where user step code runs in the threaded engine.

``concurrent.futures`` threads are joined when the interpreter exits, so a step still running after
``Engine.stop`` gave up on it would hold the process for as long as the step takes. Here every thread
is a daemon: a stopped worker's process exits at once, and the abandoned step's run is taken over by
another worker when its lease expires (steps are at-least-once).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["DaemonPool", "call_in_thread", "map_in_threads"]

T = TypeVar("T")
_STOP = object()


def call_in_thread(fn: Callable[..., T], *args: Any, name: str) -> concurrent.futures.Future[T]:
    """``fn(*args)`` on a new daemon thread; its outcome lands in the returned future."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def map_in_threads(fn: Callable[[Any], T], items: Sequence[Any], name: str) -> list[T]:
    """``[fn(item) for item in items]``, each on its own daemon thread, all at once."""
    futures = [call_in_thread(fn, item, name=f"{name}-{i}") for i, item in enumerate(items)]
    return [f.result() for f in futures]


class DaemonPool:
    """A fixed number of daemon threads running submitted calls, in order of submission."""

    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a free thread; RuntimeError after :meth:`shutdown`."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            self._queue.put((fn, args))

    def call(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        """``fn(*args)`` on a free thread; its outcome lands in the returned future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self.submit(run)
        return future

    def shutdown(self) -> None:
        """Accept nothing more; calls already queued still run, then the threads end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args = item
            fn(*args)  # callers catch and log their own errors (Worker._work does)
