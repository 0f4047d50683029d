"""Waiting for an effect in tests: bounded polling that fails with what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

__all__ = ["eventually"]


async def eventually(
    condition: Callable[[], object], what: str = "expected state", timeout: float = 5.0
) -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"no {what} within {timeout}s")
        await asyncio.sleep(0.005)
