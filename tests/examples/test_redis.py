"""examples/redis/app.py: on the test broker, with FastAPI's TestClient, and on Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from examples.redis import app as example
from fastapi_stream.testing import TestStreamBroker

KEYS = ["orders", "orders.dead", "thumbnails", "prices"]


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    def clear() -> None:
        example.billed.clear()
        example.thumbnails.clear()
        example.alerts.clear()

    clear()
    yield
    clear()


def test_post_order_is_billed_through_the_test_broker() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        response = client.post("/orders", json={"id": 1, "amount": 2.5})

        assert response.json() == {"queued": 1}
        example.bill.mock.assert_called_once_with({"id": 1, "amount": 2.5})
    assert example.billed == [1]


@pytest.mark.anyio
async def test_lists_patterns_and_requests_on_the_test_broker() -> None:
    async with TestStreamBroker(example.router) as broker:
        await broker.publish("cat.png", "thumbnails", list=True)
        await broker.publish("disk full", "alerts.high")
        await broker.publish("ignored", "alerts.high.extra")  # one segment only
        await broker.publish("not a list", "thumbnails")  # pub/sub: nobody listens
        assert await example.quote("pear") == 0.75

    assert example.thumbnails == ["cat.png"]
    assert example.alerts == [("high", "disk full")]


@pytest.fixture
def redis_keys() -> Iterator[None]:
    """The example uses fixed names: start and end with them gone."""
    with redis.Redis.from_url("redis://127.0.0.1:6379/0") as client:
        client.delete(*KEYS)
        try:
            yield
        finally:
            client.delete(*KEYS)


# --8<-- [start:real]
@pytest.mark.anyio
@pytest.mark.redis
async def test_the_same_example_on_redis(redis_keys: None) -> None:
    async with TestStreamBroker(example.router, with_real=True) as broker:
        await broker.publish({"id": 2, "amount": 9.5}, "orders", stream=True)
        await broker.publish("dog.png", "thumbnails", list=True)
        await broker.publish("disk full", "alerts.high")
        assert await example.quote("apple") == 0.5
        await asyncio.wait_for(example.bill.wait_call(), 5)
        await asyncio.wait_for(example.make_thumbnail.wait_call(), 5)
        await asyncio.wait_for(example.alert.wait_call(), 5)

    assert example.billed == [2]
    assert example.thumbnails == ["dog.png"]
    assert example.alerts == [("high", "disk full")]


# --8<-- [end:real]


@pytest.mark.redis
def test_the_app_starts_on_redis_with_testclient(redis_keys: None) -> None:
    with TestClient(example.app) as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        assert client.post("/orders", json={"id": 3, "amount": 1.0}).json() == {"queued": 3}
        deadline = time.monotonic() + 5  # the app's loop runs in TestClient's thread
        while not example.billed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert example.billed == [3]
