"""examples/rabbit/app.py: on the test broker (no RabbitMQ needed), then on RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
from fastapi.testclient import TestClient

from examples.rabbit import app as example
from fastapi_stream.testing import TestStreamBroker
from tests.rabbit.conftest import URL, eventually

QUEUES = [
    "shop.shipping",
    "shop.audit",
    "shop.regions",
    "shop.payments",
    "shop.payments.review",
    "shop.stock",
]
EXCHANGES = ["shop.orders", "shop.payments.dlx"]


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    def clear() -> None:
        for recorded in (example.shipped, example.audited, example.charged, example.refused):
            recorded.clear()
        example.per_region.clear()

    clear()
    yield
    clear()


def test_orders_route_through_the_topic_exchange() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        for n, region in enumerate(["eu", "us", "eu"], start=1):
            response = client.post("/orders", json={"id": n, "region": region, "amount": 9})
            assert response.status_code == 200
    assert example.shipped == [1, 2, 3]
    assert example.audited == ["orders.eu.created", "orders.us.created", "orders.eu.created"]
    assert example.per_region == {"eu": 2, "us": 1}


@pytest.mark.anyio
async def test_a_payment_that_keeps_failing_is_retried_then_rejected() -> None:
    async with TestStreamBroker(example.router) as broker:
        await broker.publish({"id": 1, "region": "eu", "amount": 10}, "shop.payments")
        with pytest.raises(ValueError, match="manual review"):
            await broker.publish({"id": 2, "region": "eu", "amount": 5000}, "shop.payments")
        assert example.charge.mock.call_count == 1 + 3  # three deliveries of payment 2
    assert example.charged == [1]
    # The dead-letter exchange is RabbitMQ's own: only the real broker (below) moves the
    # rejected message to shop.payments.review.
    assert example.refused == []


@pytest.mark.anyio
async def test_request_reply() -> None:
    async with TestStreamBroker(example.router):
        assert await example.available("apple") == 3
        assert await example.available("plum") == 0


@pytest.fixture
async def clean_broker() -> AsyncIterator[None]:
    """The example's names are fixed: remove them before and after the real run."""

    async def remove() -> None:
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            for queue in QUEUES:
                await channel.queue_delete(queue)
            for exchange in EXCHANGES:
                await channel.exchange_delete(exchange)

    await remove()
    yield
    await remove()


@pytest.mark.anyio
@pytest.mark.rabbit
@pytest.mark.usefixtures("clean_broker")
async def test_the_example_on_rabbitmq(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = example.router.broker.transport
    monkeypatch.setattr(transport, "url", URL)
    async with TestStreamBroker(example.router, with_real=True):
        await example.create(example.Order(id=1, region="eu", amount=9))
        await example.create(example.Order(id=2, region="us", amount=9))
        await eventually(lambda: len(example.shipped) == 2, "shipping")
        await eventually(lambda: sum(example.per_region.values()) == 2, "region counts")
        await eventually(lambda: len(example.audited) == 2, "audit")

        broker = example.router.broker
        await broker.publish({"id": 3, "region": "eu", "amount": 10}, "shop.payments")
        await broker.publish({"id": 4, "region": "eu", "amount": 5000}, "shop.payments")
        await eventually(lambda: example.refused == [4], "the dead-lettered payment")
        assert example.charged == [3]

        assert await example.available("apple") == 3
    assert example.per_region == {"eu": 1, "us": 1}
    assert sorted(example.audited) == ["orders.eu.created", "orders.us.created"]
