"""Readiness against each real broker: 200, then 503 within seconds of the broker going
away (a loopback proxy cuts every connection and refuses new ones), then 200 again once
it is back, with no restart of the app."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_stream import StreamRouter
from tests.faults.proxy import Proxy

#: broker -> (its port, URL through a proxy port)
BROKERS: dict[str, tuple[int, Callable[[int], str]]] = {
    "rabbit": (5672, lambda port: f"amqp://guest:guest@127.0.0.1:{port}/"),
    "nats": (4222, lambda port: f"nats://127.0.0.1:{port}"),
    "redis": (6379, lambda port: f"redis://127.0.0.1:{port}/0"),
}
GONE_WITHIN = 10.0  # seconds until readiness reports the outage
BACK_WITHIN = 30.0  # seconds until it is ready again after the broker returns


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=getattr(pytest.mark, name)) for name in BROKERS]
)
def test_readiness_follows_the_broker(name: str) -> None:
    port, url_for = BROKERS[name]
    proxy = Proxy(("127.0.0.1", port))
    with TestClient(FastAPI()) as helper:  # a loop of our own to run the proxy in
        portal = helper.portal
        assert portal is not None
        portal.call(proxy.start)
        try:
            router = StreamRouter(url_for(proxy.port))

            @router.subscriber(f"health-{uuid.uuid4().hex}")
            async def handler() -> None: ...

            app = FastAPI()
            app.include_router(router)
            with TestClient(app) as client:
                assert client.get("/health/ready").status_code == 200
                portal.call(proxy.stop)
                assert _status_within(client, 503, GONE_WITHIN)
                assert client.get("/health/live").status_code == 200
                portal.call(proxy.start)
                assert _status_within(client, 200, BACK_WITHIN)
        finally:
            portal.call(proxy.stop)


def _status_within(client: TestClient, status: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == status:
            return True
        time.sleep(0.2)
    return False
