"""examples/observability/app.py: health, log context, metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.observability import app as example


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_health_logs_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fastapi_stream"), TestClient(example.app) as client:
        assert client.get("/health/live").json() == {"status": "ok"}
        assert client.get("/health/ready").json()["status"] == "ready"

        async def pay() -> None:
            await example.router.broker.publish(12.5, "payments", message_id="pay-1")
            await example.settle.wait_call(2)

        client.portal.call(pay)  # type: ignore[union-attr]
        metrics = client.get("/metrics").text
    settling = next(r for r in caplog.records if r.getMessage() == "settling 12.50")
    assert settling.stream_context == "payments settle pay-1"  # type: ignore[attr-defined]
    assert (
        'fastapi_stream_processed_messages_total{broker="memory",destination="payments",'
        'handler="settle",status="acked"} 1.0'
    ) in metrics
