"""examples/memory/app.py: the memory broker's groups, fan-out, requests and bounds."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import anyio
import pytest
from fastapi.testclient import TestClient

from examples.memory import app as example
from fastapi_stream import PublishError, RequestTimeout
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    def clear() -> None:
        example.packed["north"].clear()
        example.packed["south"].clear()
        example.emailed.clear()
        example.archived.clear()

    clear()
    yield
    clear()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_a_group_shares_the_work_and_a_private_subscriber_sees_everything() -> None:
    # Both routers keep the real memory broker: they talk through the engine "shop".
    async with (
        TestStreamBroker(example.shop, with_real=True) as shop,
        TestStreamBroker(example.warehouse, with_real=True),
    ):
        for order_id in range(1, 7):
            await shop.publish(order_id, "shop.orders")
        await wait_until(lambda: len(example.emailed) == 6)
        await wait_until(lambda: len(example.packed["north"] + example.packed["south"]) == 6)
    assert example.emailed == [1, 2, 3, 4, 5, 6]
    assert sorted(example.packed["north"] + example.packed["south"]) == [1, 2, 3, 4, 5, 6]


@pytest.mark.anyio
async def test_request_reply_across_routers_on_one_engine() -> None:
    async with (
        TestStreamBroker(example.shop, with_real=True),
        TestStreamBroker(example.warehouse, with_real=True),
    ):
        assert await example.available("apple") == 3
        assert await example.available("plum") == 0


@pytest.mark.anyio
async def test_request_without_a_replier_times_out() -> None:
    async with TestStreamBroker(example.shop, with_real=True):  # the warehouse is down
        with pytest.raises(RequestTimeout):
            await example.shop.broker.request("apple", "shop.stock", timeout=0.05)


@pytest.mark.anyio
async def test_a_full_group_makes_publish_wait_then_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example.engine, "max_queue", 2)
    monkeypatch.setattr(example.engine, "publish_timeout", 0.05)
    async with example.archive.broker as broker:
        await broker.stop()  # the group stays; nobody consumes it now
        await broker.publish("a", "shop.events")
        await broker.publish("b", "shop.events")
        with pytest.raises(PublishError, match="is full"):
            await broker.publish("c", "shop.events")
        assert example.engine.stats()["shop.events#archivist"]["queued"] == 2
        # A consumer that comes back gets what arrived meanwhile.
        await broker.start()
        await wait_until(lambda: len(example.archived) == 2)
    assert example.archived == ["a", "b"]


def test_both_routers_start_with_the_app() -> None:
    with TestClient(example.app) as client:
        assert client.get("/health/ready").json()["status"] == "ready"
        assert client.get("/health/warehouse/ready").json()["status"] == "ready"
