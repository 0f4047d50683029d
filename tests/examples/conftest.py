"""Fixtures for the tests of ``examples/``: each example keeps module-level lists that
stand in for a database, and those are emptied around every test."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
