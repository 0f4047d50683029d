"""examples/nats/app.py: with the test broker, and the same app on the real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from nats.js.errors import NotFoundError

from examples.nats import app as example
from fastapi_stream.nats import NatsTransport
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    example.invoices.clear()
    example.settings.clear()
    yield
    example.invoices.clear()
    example.settings.clear()


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_with_the_test_broker() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        assert client.post("/orders/eu", json={"id": 1, "amount": 10}).json() == {"queued": 1}
        # The inline test broker ran the handler before publish() returned.
        assert example.invoices == [example.Invoice(order_id=1, region="eu", total=12.0)]
        example.bill.mock.assert_called_once_with({"id": 1, "amount": 10})

        assert client.get("/prices/plum").json() == {"plum": 0.8}

        # NATS wildcards route in the test broker as on the server.
        client.portal.call(example.router.broker.publish, "started", "shop.logs.api.boot")
        example.log_line.mock.assert_called_once_with("started")

        client.portal.call(example.router.broker.publish, "on", "feature.dark")
        assert example.settings == {"feature.dark": "on"}


async def _forget_example_state() -> None:
    transport = NatsTransport(example.NATS_URL)
    await transport.connect()
    try:
        for stream in ("shop_orders", "KV_shop_settings"):
            with contextlib.suppress(NotFoundError):  # it did not exist
                await transport.jsm.delete_stream(stream)
    finally:
        await transport.close()


@pytest.mark.nats
def test_on_the_real_server() -> None:
    asyncio.run(_forget_example_state())
    try:
        with TestStreamBroker(example.router, with_real=True), TestClient(example.app) as client:
            assert client.post("/orders/us", json={"id": 2, "amount": 5}).status_code == 200
            wait_until(lambda: example.invoices)
            assert example.invoices == [example.Invoice(order_id=2, region="us", total=6.0)]

            assert client.get("/prices/apple").json() == {"apple": 0.5}

            kv = client.portal.call(example.router.key_value, "shop_settings")
            client.portal.call(kv.put, "feature.dark", b"on")
            wait_until(lambda: example.settings == {"feature.dark": "on"})
    finally:
        asyncio.run(_forget_example_state())
