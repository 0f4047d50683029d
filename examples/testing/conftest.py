"""pytest fixtures for the tests in this folder, as an application's conftest.py."""

from __future__ import annotations

import pytest


# --8<-- [start:anyio]
@pytest.fixture
def anyio_backend() -> str:
    """Run `@pytest.mark.anyio` tests on asyncio (anyio's pytest plugin)."""
    return "asyncio"


# --8<-- [end:anyio]
