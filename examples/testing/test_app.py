"""Tests of the quickstart service, written as an application would write them.

``docs/testing.md`` shows these functions; ``tests/examples/test_testing.py`` runs them.
They also run on their own: ``.venv/bin/python -m pytest examples/testing``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.quickstart.app import app, audit, audit_log, currency, router, validate
from fastapi_stream import PayloadError
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def empty_audit_log() -> Iterator[None]:
    audit_log.clear()
    yield
    audit_log.clear()


# --8<-- [start:sync]
def test_create_order() -> None:
    with TestStreamBroker(router), TestClient(app) as client:
        response = client.post("/orders", json={"id": 1, "amount": 2.5})

        assert response.json() == {"queued": 1}
        # Both handlers ran before the HTTP call returned.
        validate.mock.assert_called_once_with({"id": 1, "amount": 2.5})
        audit.mock.assert_called_once_with({"id": 1, "amount": 2.5, "currency": "EUR"})


# --8<-- [end:sync]


# --8<-- [start:override]
def test_currency_can_be_overridden() -> None:
    app.dependency_overrides[currency] = lambda: "USD"
    try:
        with TestStreamBroker(router), TestClient(app) as client:
            client.post("/orders", json={"id": 2, "amount": 10})

            audit.mock.assert_called_once_with({"id": 2, "amount": 10.0, "currency": "USD"})
    finally:
        app.dependency_overrides.clear()


# --8<-- [end:override]


# --8<-- [start:async]
@pytest.mark.anyio
async def test_validate_passes_the_order_on() -> None:
    async with TestStreamBroker(router, app=app) as broker:
        await broker.publish({"id": 3, "amount": 1}, "orders")

        validate.mock.assert_called_once_with({"id": 3, "amount": 1})
        audit.mock.assert_called_once_with({"id": 3, "amount": 1.0, "currency": "EUR"})


# --8<-- [end:async]


# --8<-- [start:override-async]
@pytest.mark.anyio
async def test_currency_can_be_overridden_without_test_client() -> None:
    app.dependency_overrides[currency] = lambda: "CHF"
    try:
        async with TestStreamBroker(router, app=app) as broker:
            await broker.publish({"id": 6, "amount": 4}, "orders")

            audit.mock.assert_called_once_with({"id": 6, "amount": 4.0, "currency": "CHF"})
    finally:
        app.dependency_overrides.clear()


# --8<-- [end:override-async]


# --8<-- [start:errors]
@pytest.mark.anyio
async def test_an_invalid_order_is_rejected() -> None:
    async with TestStreamBroker(router, app=app) as broker:
        with pytest.raises(PayloadError, match=r"body\.amount"):
            await broker.publish({"id": 4, "amount": 0}, "orders")

        audit.mock.assert_not_called()


# --8<-- [end:errors]


# --8<-- [start:real]
@pytest.mark.anyio
async def test_against_the_real_broker() -> None:
    # BROKER_URL=kafka://... runs this against Kafka; by default the memory broker.
    async with TestStreamBroker(router, app=app, with_real=True) as broker:
        await broker.publish({"id": 5, "amount": 3}, "orders")
        await audit.wait_call(timeout=10)

        audit.mock.assert_called_once_with({"id": 5, "amount": 3.0, "currency": "EUR"})


# --8<-- [end:real]
