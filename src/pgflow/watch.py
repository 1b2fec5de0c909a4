"""Waiting for a run to change: LISTEN on the store's per-schema channel, with a polling fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .operations import Waiter


@contextmanager
def watch_run(backend: Any, run_id: str) -> Iterator[Waiter]:
    """Yield ``wait(run_id, seconds)`` that returns when the run may have changed.

    LISTEN starts before the caller's first read, so no change between read and wait is missed.
    """
    store = backend.store()
    opener = getattr(store, "watch_runs", None) or getattr(store, "listen_runs", None)
    if opener is None:
        yield lambda _run_id, seconds: time.sleep(min(seconds, 0.05))
        return
    with opener() as listener:
        yield lambda rid, seconds: listener.wait(rid, min(seconds, 1.0))
