"""examples/handlers/app.py: each documented way of declaring a handler parameter."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.handlers import app as example
from fastapi_stream import PayloadError
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    def clear() -> None:
        example.orders.clear()
        example.payments.clear()
        example.batches.clear()
        example.shipments.clear()
        example.sessions.clear()
        example.app.dependency_overrides.clear()

    clear()
    yield
    clear()


@pytest.mark.anyio
async def test_one_model_receives_the_whole_body() -> None:
    async with TestStreamBroker(example.router, app=example.app) as broker:
        await broker.publish({"id": 1, "sku": "apple"}, "handlers.orders")
        example.take_order.mock.assert_called_once_with({"id": 1, "sku": "apple"})
    assert example.orders == [example.Order(id=1, sku="apple", quantity=1)]


@pytest.mark.anyio
async def test_several_parameters_receive_the_fields_of_a_json_object() -> None:
    async with TestStreamBroker(example.router, app=example.app) as broker:
        await broker.publish({"order_id": 1, "amount": 9.5}, "handlers.payments")
        await broker.publish({"order_id": 2, "amount": 3, "currency": "USD"}, "handlers.payments")
        with pytest.raises(PayloadError, match=r"body\.order_id: Field required"):
            await broker.publish({"amount": 1}, "handlers.payments")
    assert example.payments == [(1, 9.5, "EUR"), (2, 3.0, "USD")]


@pytest.mark.anyio
async def test_path_parameter_from_the_channel_and_a_header() -> None:
    async with TestStreamBroker(example.router, app=example.app) as broker:
        await broker.publish(
            {"id": 7, "sku": "pear"}, "handlers.shipments.eu", headers={"tenant-id": "acme"}
        )
        with pytest.raises(PayloadError, match=r"headers\.tenant-id: Field required"):
            await broker.publish({"id": 8, "sku": "pear"}, "handlers.shipments.us")
    assert example.shipments == [("eu", "acme", 7)]


@pytest.mark.anyio
async def test_yield_dependency_is_closed_after_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_stream")
    async with TestStreamBroker(example.router, app=example.app) as broker:
        await broker.publish(
            {"id": 3, "sku": "apple", "quantity": 2},
            "handlers.reservations",
            headers={"tenant-id": "ACME"},
        )
    (session,) = example.sessions
    assert session.writes == ["acme: 2 x apple"]
    assert session.closed
    assert any("arrived on handlers.reservations" in r.getMessage() for r in caplog.records)


def test_dependency_override_applies_to_message_handlers() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        assert client.get("/convert", params={"amount": 10}).json() == 10.0
        example.app.dependency_overrides[example.exchange_rate] = lambda: 1.5
        assert client.get("/convert", params={"amount": 10}).json() == 15.0
        assert example.converted.mock.call_args_list == [((10.0,),), ((15.0,),)]


def test_context_values_and_lifespan_state() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        assert client.get("/stock/apple").json() == 3
        response = client.post("/restock", json={"id": 4, "sku": "apple", "quantity": 2})
        assert response.json() == {"queued": "apple"}
        example.restock.mock.assert_called_once_with({"id": 4, "sku": "apple", "quantity": 2})
        assert client.get("/stock/apple").json() == 5


def test_results_go_to_publishers_and_back_to_the_requester() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        assert client.get("/quotes/apple", params={"quantity": 4}).json() == {
            "sku": "apple",
            "total": 2.0,
        }
        example.priced.mock.assert_called_once_with({"sku": "apple", "total": 2.0})
        example.audited.mock.assert_called_once_with({"sku": "apple", "total": 2.0})


@pytest.mark.anyio
async def test_reply_carries_the_response_headers() -> None:
    async with TestStreamBroker(example.router, app=example.app) as broker:
        reply = await broker.request(example.Quote(sku="pear", quantity=2), "handlers.quotes")
    assert reply.decode() == {"sku": "pear", "total": 1.5}
    assert reply.headers["priced-by"] == "v2"


@pytest.mark.anyio
async def test_a_batch_handler_gets_valid_items_as_a_list() -> None:
    async with TestStreamBroker(example.router, app=example.app) as broker:
        await broker.publish({"id": 1, "sku": "pear"}, "handlers.stock")
        with pytest.raises(PayloadError):
            await broker.publish({"id": "x"}, "handlers.stock")
    assert example.batches == [["pear"]]


@pytest.mark.anyio
async def test_hooks_announce_start_and_stop() -> None:
    async with TestStreamBroker(example.router, app=example.app) as broker:
        example.lifecycle.mock.assert_called_once_with(
            {"event": "started", "service": "fastapi-stream handlers example"}
        )
        assert broker.state.announced is True
    # Hooks run while the app shuts down; the mock was reset when the block ended.


@pytest.mark.anyio
async def test_background_tasks_run_after_the_handler() -> None:
    example.notifications.clear()
    async with TestStreamBroker(example.router, app=example.app) as broker:
        await broker.publish({"id": 9, "sku": "apple"}, "handlers.packing")
        assert example.notifications == ["order 9 is packed"]
