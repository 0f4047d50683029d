"""Shared fixtures.

Real-broker tests are marked with their broker (``@pytest.mark.redis`` ...). Before the
first of them runs, the broker is made reachable (started if it is down and can be);
if it still cannot be reached the test fails: a real-broker test never skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests import brokers

REAL_BROKERS = ("kafka", "rabbit", "nats", "redis", "mqtt")
_checked: dict[str, str | None] = {}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def memory_url() -> str:
    """A memory broker of this test's own: no message crosses between tests."""
    return f"memory://{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def _real_broker_reachable(request: pytest.FixtureRequest) -> Iterator[None]:
    for name in REAL_BROKERS:
        if request.node.get_closest_marker(name) is None:
            continue
        if name not in _checked:
            try:
                brokers.ensure(name)
                _checked[name] = None
            except brokers.BrokerUnavailable as exc:
                _checked[name] = str(exc)
        problem = _checked[name]
        if problem is not None:
            pytest.fail(f"{name} is needed by this test and unreachable: {problem}", pytrace=False)
    yield
