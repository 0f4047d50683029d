"""examples/asyncapi/app.py: the documented service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.asyncapi import app as example
from fastapi_stream.testing import TestStreamBroker
from tests.asyncapi.checks import assert_valid


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
