"""TestStreamBroker: the production pipeline on an inline memory transport."""

from __future__ import annotations

from unittest.mock import call

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_stream import PayloadError, StreamMessage, StreamRouter
from fastapi_stream.testing import TestStreamBroker


class Order(BaseModel):
    id: int


def build() -> tuple[StreamRouter, FastAPI, list[str]]:
    router = StreamRouter("memory://test-broker-app")
    trail: list[str] = []
    shipped = router.publisher("shipped")

    @router.subscriber("orders")
    @router.publisher("billing")
    async def place(order: Order) -> Order:
        trail.append(f"place {order.id}")
        return order

    @router.subscriber("billing")
    async def bill(order: Order) -> None:
        trail.append(f"bill {order.id}")
        await shipped.publish({"id": order.id})

    @router.subscriber("explode")
    async def explode() -> None:
        raise RuntimeError("handler failed")

    @router.post("/orders")
    async def create(order: Order) -> dict[str, int]:
        await router.broker.publish(order, "orders")
        return {"queued": order.id}

    app = FastAPI()
    app.include_router(router)
    return router, app, trail


@pytest.mark.parametrize("broker_first", [True, False])
def test_beside_testclient_in_either_order(broker_first: bool) -> None:
    router, app, trail = build()
    place = router.broker.subscribers[0].endpoint
    client = TestClient(app)
    first, second = (
        (TestStreamBroker(router), client) if broker_first else (client, TestStreamBroker(router))
    )
    with first, second:
        assert client.post("/orders", json={"id": 1}).status_code == 200
        # publish returned only after the whole chain ran
        assert trail == ["place 1", "bill 1"]
        place.mock.assert_called_once_with({"id": 1})
        router.broker.publishers[0].mock.assert_called_once_with({"id": 1})
    place.mock.assert_not_called()  # reset on exit


@pytest.mark.anyio
async def test_async_use_needs_no_app_and_raises_handler_errors() -> None:
    router, _, trail = build()
    async with TestStreamBroker(router) as broker:
        await broker.publish({"id": 2}, "orders")
        assert trail == ["place 2", "bill 2"]
        with pytest.raises(RuntimeError, match="handler failed"):
            await broker.publish(None, "explode")
        with pytest.raises(PayloadError, match=r"body\.id"):
            await broker.publish({"id": "not a number"}, "orders")
    assert not router.broker.started


@pytest.mark.anyio
async def test_wait_call_and_mocks() -> None:
    router, _, _ = build()
    bill = router.broker.subscribers[1].endpoint
    async with TestStreamBroker(router) as broker:
        await broker.publish({"id": 3}, "billing")
        await bill.wait_call(timeout=1)
        bill.mock.assert_called_once_with({"id": 3})
        with pytest.raises(TimeoutError):
            await router.broker.subscribers[0].endpoint.wait_call(timeout=0.05)


@pytest.mark.anyio
async def test_with_real_runs_against_the_real_transport(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("ch")
    async def handler(order: Order) -> None: ...

    async with TestStreamBroker(router, with_real=True) as broker:
        assert broker.transport.describe() == memory_url
        await broker.publish({"id": 4}, "ch")
        await handler.wait_call(timeout=2)
        handler.mock.assert_called_once_with({"id": 4})


@pytest.mark.anyio
async def test_mocks_show_decoded_bodies_and_bytes_that_do_not_decode() -> None:
    router = StreamRouter("memory://test-broker-mocks")
    echoed = router.publisher("echoed")

    @router.subscriber("raw")
    async def take(msg: StreamMessage) -> None:
        await echoed.publish(msg.body)

    @router.subscriber("batches", batch=True)
    async def take_batch(orders: list[Order]) -> None:
        return None

    async with TestStreamBroker(router) as broker:
        await broker.publish(b"\xff not json", "raw", content_type="application/json")
        await broker.publish(b"plain", "raw", content_type="text/plain")
        await broker.publish({"id": 5}, "batches")
        take.mock.assert_has_calls([call(b"\xff not json"), call("plain")])
        echoed.mock.assert_has_calls([call(b"\xff not json"), call(b"plain")])
        take_batch.mock.assert_called_once_with([{"id": 5}])
