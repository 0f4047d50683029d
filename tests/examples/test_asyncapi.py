"""examples/asyncapi: the documented services, and a client generated from a document."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from examples.asyncapi import app as example
from examples.asyncapi import rabbit as rabbit_example
from fastapi_stream.testing import TestStreamBroker
from tests.asyncapi.checks import assert_valid
from tests.waiting import eventually


@pytest.fixture(autouse=True)
def clean_log() -> Iterator[None]:
    example.dispatched_log.clear()
    yield
    example.dispatched_log.clear()


def test_the_docs_routes_and_the_document() -> None:
    client = TestClient(example.app)
    document = assert_valid(client.get("/events/asyncapi.json").json())
    assert document["info"]["title"] == "Dispatch"
    operation = document["operations"]["dispatch"]
    assert operation["title"] == "Dispatch shipments"
    assert operation["description"] == "Assign a truck to a new shipment."
    assert {c["address"] for c in document["channels"].values()} == {
        "shipments.{region}",
        "dispatched",
        None,  # the reply channel: the request's reply-to names it
    }
    assert set(document["components"]["schemas"]) == {
        "Shipment",
        "Address",
        "Priority",
        "Dispatched",
    }
    assert "audit" not in str(document)
    assert_valid(client.get("/events/asyncapi.json").json())
    page = client.get("/events/asyncapi").text
    assert 'href="/docs"' in page and "shipments.{region}" in page
    assert "(/events/asyncapi)" in example.app.openapi()["info"]["description"]


def test_the_service_runs() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        payload = {"id": 7, "to": {"street": "1 rue X", "city": "Lyon"}}

        async def send() -> None:
            await example.router.broker.publish(payload, "shipments.eu", headers={"tenant": "acme"})

        client.portal.call(send)  # type: ignore[union-attr]
    assert example.dispatched_log == ["acme:7"]


# -- examples/asyncapi/rabbit.py: a client generated from the document, on RabbitMQ -------

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def generate_client(document: dict[str, Any], folder: Path) -> ModuleType:
    """The package asyncapi-python generates from ``document``, imported."""
    spec = folder / "asyncapi.json"
    spec.write_text(json.dumps(document))
    package = f"client_{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("asyncapi-python-codegen")), str(spec), package],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Type checking passed" in done.stdout, done.stdout  # the generated code is typed
    assert "❌" not in done.stdout, done.stdout
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(folder))


def operations(client: ModuleType, wire: Any, codecs: Any) -> dict[str, Any]:
    """The operations of the generated endpoints, by channel address.

    asyncapi-python generates the application a document describes: the service. The
    client is built from the same generated operations with send and receive swapped
    (asyncapi-python keeps an endpoint's operation in ``_operation``, without a public
    accessor)."""
    from asyncapi_python.kernel.endpoint import AbstractEndpoint

    found = {}
    for value in vars(client.router).values():
        generated = isinstance(value, type) and value.__module__ == client.router.__name__
        if generated and issubclass(value, AbstractEndpoint):
            operation = value(wire, codecs)._operation
            found[operation.channel.address] = operation
    return found


@pytest.mark.rabbit
@pytest.mark.timeout(180)  # the generator type-checks what it writes (mypy)
def test_a_client_generated_from_the_document_talks_to_the_service(tmp_path: Path) -> None:
    from asyncapi_python.contrib.codec.registry import CodecRegistry
    from asyncapi_python.contrib.wire.amqp import AmqpWire
    from asyncapi_python.kernel.endpoint import Publisher, RpcClient, Subscriber

    name = f"asyncapi-{uuid.uuid4().hex[:8]}"
    rabbit_example.handled.clear()
    app = rabbit_example.make_app(RABBIT_URL, name=name)
    with TestClient(app) as service:
        document = service.get("/orders/asyncapi.json").json()
        assert service.get("/shipping/asyncapi.json").json() == document
        client = generate_client(document, tmp_path)

        async def talk() -> None:
            wire = AmqpWire(RABBIT_URL)
            codecs = CodecRegistry(client)
            service_side = operations(client, wire, codecs)

            def endpoint(kind: Any, address: str, action: str, **changes: Any) -> Any:
                operation = dataclasses.replace(service_side[address], action=action, **changes)
                return kind(operation=operation, wire_factory=wire, codec_factory=codecs)

            # The service publishes each receipt to the receipts queue: receive them.
            receipts: list[Any] = []
            receipt_feed = endpoint(Subscriber, f"{name}.receipts", "receive")

            @receipt_feed
            async def on_receipt(receipt: Any) -> None:
                receipts.append(receipt)

            # Publish an order (no reply asked), a shipment to the topic exchange, a request.
            orders = endpoint(Publisher, f"{name}.orders", "send", reply=None)
            shipments = endpoint(Publisher, f"{name}.shipments", "send")
            prices = endpoint(RpcClient, f"{name}.prices", "send")
            started = [receipt_feed, orders, shipments, prices]
            try:
                for each in started:
                    await each.start()
                messages = client.messages.json
                await orders(messages.TakeOrderMessage({"id": 7, "amount": 12.5}))
                await shipments(messages.DispatchMessage({"order_id": 7, "region": "eu"}))
                price = await prices(
                    messages.PriceMessage({"sku": "A-1", "quantity": 4}), timeout=10
                )
                assert isinstance(price, messages.PriceReply)
                assert price.root.total == 10.0 and price.root.sku == "A-1"
                await eventually(lambda: len(receipts) == 1, "receipt", timeout=10)
                assert receipts[0].root.order_id == 7 and receipts[0].root.total == 12.5
                await eventually(lambda: len(rabbit_example.handled) == 2, "handled", timeout=10)
            finally:
                for each in reversed(started):
                    await each.stop()
                await wire.close()

        asyncio.run(talk())
    assert sorted(rabbit_example.handled) == ["order 7 for nobody", "shipment 7 in eu"]
