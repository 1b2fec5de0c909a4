"""Calling user step functions, sync or ``async def``, with timeouts, from blocking code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import types
from collections.abc import Callable
from typing import Any

from .errors import StepTimeoutError
from .threads import call_in_thread


class StepCaller:
    """Runs step functions. Sync functions run in the calling thread, or in a helper thread when
    they have a timeout (abandoned on expiry); ``async def`` functions run on one event loop thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="pgflow-async-steps", daemon=True).start()
                self._loop = loop
            return self._loop

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, what: str) -> Any:
        if is_async(fn):
            return self._call_async(fn, args, timeout, what)
        if timeout is None:
            result = fn(*args)
            if inspect.isawaitable(result):
                return self._await(result, None, what)
            return result
        # abandoned on expiry (result discarded); run in a copy of this thread's context (as
        # asyncio.to_thread): the step's span, and any context variable, is current there too
        future = call_in_thread(contextvars.copy_context().run, fn, *args, name="pgflow-step")
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise StepTimeoutError(f"{what} timed out after {timeout:g}s") from None

    def _call_async(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, what: str
    ) -> Any:
        return self._await(fn(*args), timeout, what)

    def _await(self, awaitable: Any, timeout: float | None, what: str) -> Any:
        async def runner() -> Any:
            return await asyncio.wait_for(awaitable, timeout)

        future = asyncio.run_coroutine_threadsafe(runner(), self._event_loop())
        try:
            return future.result()
        except TimeoutError:
            raise StepTimeoutError(f"{what} timed out after {timeout:g}s") from None

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


def is_async(fn: Callable[..., Any]) -> bool:
    """``async def`` (or an object whose ``__call__`` is). A plain function or bound method is
    decided by its own flags alone: the ``__call__`` of its type is never a coroutine function."""
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, types.FunctionType | types.MethodType):
        return False
    return inspect.iscoroutinefunction(type(fn).__call__)
