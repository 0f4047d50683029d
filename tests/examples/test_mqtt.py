"""examples/mqtt/app.py: on the test broker, with FastAPI's TestClient, and on Mosquitto."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from examples.mqtt import app as example
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    example.heating.clear()
    yield
    example.heating.clear()


def test_report_regulates_through_the_test_broker() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        response = client.post("/rooms/kitchen/temp", json={"celsius": 17.5})

        assert response.json() == {"reported": "kitchen"}
        example.regulate.mock.assert_called_once_with({"celsius": 17.5})
    assert example.heating == [("kitchen", True)]


@pytest.mark.anyio
async def test_wildcards_and_requests_on_the_test_broker() -> None:
    async with TestStreamBroker(example.router) as broker:
        await broker.publish({"celsius": 22}, "home/bedroom/temp")
        await broker.publish({"celsius": 10}, "home/bedroom/temp/extra")  # one level only
        assert await example.ask_setpoint("kitchen") == 20.5

    assert example.heating == [("bedroom", False)]


# --8<-- [start:real]
@pytest.mark.anyio
@pytest.mark.mqtt
async def test_the_same_example_on_mosquitto() -> None:
    async with TestStreamBroker(example.router, with_real=True) as broker:
        await broker.publish({"celsius": 18}, "home/hall/temp")
        assert await example.ask_setpoint("bedroom") == 18.0
        await asyncio.wait_for(example.regulate.wait_call(), 5)

    assert example.heating == [("hall", True)]


# --8<-- [end:real]


@pytest.mark.mqtt
def test_the_app_starts_on_mosquitto_with_testclient() -> None:
    with TestClient(example.app) as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        assert client.post("/rooms/attic/temp", json={"celsius": 25}).json() == {
            "reported": "attic"
        }
        deadline = time.monotonic() + 5  # the app's loop runs in TestClient's thread
        while not example.heating and time.monotonic() < deadline:
            time.sleep(0.01)
    assert example.heating == [("attic", False)]
