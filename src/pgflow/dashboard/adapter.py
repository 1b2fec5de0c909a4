"""One way for the async views to call any pgflow client: sync (``Client``, ``Engine``, ``Harness``)
in Starlette's thread pool, async (``AsyncClient``) by awaiting it."""

from __future__ import annotations

import inspect
from typing import Any

import pendulum
from starlette.concurrency import run_in_threadpool

__all__ = ["ClientAdapter"]


class ClientAdapter:
    """Calls the client's public methods by name; the views never care which kind it is."""

    def __init__(self, client: object) -> None:
        self.client = client

    def has(self, method: str) -> bool:
        """Whether the client offers ``method`` (newer methods such as ``retry_workflow``)."""
        return callable(getattr(self.client, method, None))

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.client, method)
        if inspect.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    def now(self) -> pendulum.DateTime:
        """The client's clock when it exposes one (``Engine.clock``, ``Harness.clock``: a simulated
        clock draws its bars in simulated time), else the system clock."""
        clock = getattr(self.client, "clock", None)
        if clock is not None and callable(getattr(clock, "now", None)):
            now: pendulum.DateTime = clock.now()
            return now
        return pendulum.now("UTC")
