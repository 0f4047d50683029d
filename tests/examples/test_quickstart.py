"""examples/quickstart: the service behind ``make demo``, and the demo module itself."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.quickstart import demo
from examples.quickstart.app import (
    ValidatedOrder,
    app,
    audit,
    audit_log,
    currency,
    router,
    validate,
)
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    audit_log.clear()
    yield
    audit_log.clear()
    app.dependency_overrides.clear()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestStreamBroker(router), TestClient(app) as client:
        yield client


def test_post_order_is_validated_and_audited(client: TestClient) -> None:
    response = client.post("/orders", json={"id": 1, "amount": 2.5})

    assert response.status_code == 200
    assert response.json() == {"queued": 1}
    validate.mock.assert_called_once_with({"id": 1, "amount": 2.5})
    audit.mock.assert_called_once_with({"id": 1, "amount": 2.5, "currency": "EUR"})
    assert audit_log == [ValidatedOrder(id=1, amount=2.5, currency="EUR")]
    assert client.get("/orders/validated").json() == [{"id": 1, "amount": 2.5, "currency": "EUR"}]


def test_dependency_override_changes_the_currency(client: TestClient) -> None:
    app.dependency_overrides[currency] = lambda: "USD"

    client.post("/orders", json={"id": 2, "amount": 10})

    assert audit_log == [ValidatedOrder(id=2, amount=10.0, currency="USD")]


@pytest.mark.parametrize("amount", [0, -5, "lots"])
def test_an_invalid_amount_is_refused_by_fastapi(client: TestClient, amount: object) -> None:
    response = client.post("/orders", json={"id": 3, "amount": amount})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "amount"]
    validate.mock.assert_not_called()
    assert audit_log == []


def test_health_routes(client: TestClient) -> None:
    live = client.get("/health/live")
    ready = client.get("/health/ready")

    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    (broker,) = ready.json()["brokers"]
    assert {s["handler"] for s in broker["subscribers"]} == {"validate", "audit"}


def test_readiness_is_503_while_the_broker_is_stopped() -> None:
    # No lifespan ran: the broker was never started.
    client = TestClient(app)
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 503


@pytest.mark.anyio
async def test_demo_orders_reach_the_audit() -> None:
    async with TestStreamBroker(router):
        await demo.send_demo_orders(count=2, interval=0)

        assert audit.mock.call_count == 2
    assert [order.id for order in audit_log] == [1, 2]
    assert [order.amount for order in audit_log] == [9.99, 19.98]


def test_demo_app_logs_where_to_look(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_stream.demo")
    with TestStreamBroker(router), TestClient(demo.app) as client:
        assert client.get("/health/ready").status_code == 200
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "fastapi_stream.demo")
    assert "http://127.0.0.1:8000/docs" in logged
    assert "http://127.0.0.1:8000/health/live" in logged
    assert "http://127.0.0.1:8000/health/ready" in logged
