"""Liveness and readiness: every broker of the app, no credentials, back after recovery."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_stream import StreamRouter


def test_readiness_covers_every_broker_of_the_app(memory_url: str) -> None:
    first, second = StreamRouter(memory_url + "a"), StreamRouter(memory_url + "b", prefix="/b")

    @second.subscriber("ch")
    async def handler() -> None: ...

    app = FastAPI()
    app.include_router(first)
    app.include_router(second)
    with TestClient(app) as client:
        body = client.get("/health/ready").json()
        assert body["status"] == "ready"
        assert [b["broker"] for b in body["brokers"]] == [memory_url + "a", memory_url + "b"]

        client.portal.call(second.broker.stop)  # type: ignore[union-attr]
        down = client.get("/health/ready")
        assert down.status_code == 503
        assert down.json()["brokers"][1]["subscribers"][0]["running"] is False
        assert client.get("/health/live").status_code == 200  # never about brokers

        client.portal.call(second.broker.start)  # type: ignore[union-attr]
        assert client.get("/health/ready").status_code == 200


def test_a_broker_that_stops_answering_turns_readiness_off(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        transport = router.broker.transport
        client.portal.call(transport.close)  # type: ignore[union-attr]
        assert client.get("/health/ready").json()["brokers"][0]["reachable"] is False
        client.portal.call(transport.connect)  # type: ignore[union-attr]
        assert client.get("/health/ready").status_code == 200


def test_health_output_never_shows_credentials() -> None:
    router = StreamRouter("memory://user:hunter2@somewhere")
    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert "hunter2" not in client.get("/health/ready").text


def test_routers_without_a_broker_add_no_health_routes(memory_url: str) -> None:
    parent, child = StreamRouter(memory_url), StreamRouter(prefix="/child")
    parent.include_router(child)
    app = FastAPI()
    app.include_router(parent)
    with TestClient(app) as client:
        assert client.get("/child/health/live").status_code == 404
        assert client.get("/health/live").status_code == 200
