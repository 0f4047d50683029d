"""Waiting for an effect in tests: bounded polling that fails with what was awaited."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest

__all__ = ["eventually"]


async def eventually(
    condition: Callable[[], object | Awaitable[object]],
    what: str = "expected state",
    timeout: float = 5.0,
) -> None:
    """Return once ``condition()`` is true (awaited when it is a coroutine, to ask a
    broker); fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"no {what} within {timeout}s")
        await asyncio.sleep(0.005)
