"""StreamRouter inside FastAPI apps: lifespan, nesting, prefixes, publishers, health."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_stream import (
    ConfigurationError,
    Response,
    State,
    StreamMessage,
    StreamRouter,
)
from fastapi_stream.router import RouterOptions
from tests import waiting


class Item(BaseModel):
    name: str


# Handlers here answer within milliseconds: two seconds is generous.
eventually = functools.partial(waiting.eventually, timeout=2.0)


def test_the_broker_lives_as_long_as_the_app(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    app = FastAPI()
    app.include_router(router)
    assert not router.broker.started
    with TestClient(app):
        assert router.broker.started
    assert not router.broker.started
    with TestClient(app):  # a second lifespan works as the first
        assert router.broker.started


def test_http_handlers_publish_and_subscribers_receive(memory_url: str) -> None:
    router = StreamRouter(memory_url, prefix="/api", tags=["items"])
    received: list[Item] = []

    @router.subscriber("items")
    async def on_item(item: Item) -> None:
        received.append(item)

    @router.post("/items")
    async def create(item: Item) -> dict[str, str]:
        await router.broker.publish(item, "items")
        return {"queued": item.name}

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    with TestClient(app) as client:
        assert client.post("/v1/api/items", json={"name": "a"}).json() == {"queued": "a"}
        client.portal.call(eventually, lambda: received)  # type: ignore[union-attr]
    assert received == [Item(name="a")]
    assert app.openapi()["paths"]["/v1/api/items"]["post"]["tags"] == ["items"]


def test_app_lifespan_and_router_lifespan_both_run(memory_url: str) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("app up")
        yield
        events.append("app down")

    router = StreamRouter(memory_url)
    app = FastAPI(lifespan=app_lifespan)
    app.include_router(router)
    with TestClient(app):
        assert router.broker.started
        assert events == ["app up"]
    assert events == ["app up", "app down"]
    assert not router.broker.started


def test_lifespan_state_reaches_http_routes_and_subscribers(memory_url: str) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        yield {"db": "pool"}

    router = StreamRouter(memory_url, lifespan=lifespan)
    seen: list[str] = []

    @router.subscriber("q")
    async def handler(state: State) -> None:
        seen.append(state.db)

    @router.get("/db")
    async def db(request: Request) -> dict[str, str]:
        return {"db": request.state.db}

    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/db").json() == {"db": "pool"}
        client.portal.call(router.broker.publish, None, "q")  # type: ignore[union-attr]
        client.portal.call(eventually, lambda: seen)  # type: ignore[union-attr]
    assert seen == ["pool"]


def test_several_routers_with_their_own_brokers(memory_url: str) -> None:
    first, second = StreamRouter(memory_url + "a"), StreamRouter(memory_url + "b")
    got: list[str] = []

    @first.subscriber("ch")
    async def on_first(text: str) -> None:
        got.append(f"first:{text}")

    @second.subscriber("ch")
    async def on_second(text: str) -> None:
        got.append(f"second:{text}")

    app = FastAPI()
    app.include_router(first)
    app.include_router(second)
    with TestClient(app) as client:
        assert first.broker.started and second.broker.started
        client.portal.call(first.broker.publish, "x", "ch")  # type: ignore[union-attr]
        client.portal.call(eventually, lambda: got)  # type: ignore[union-attr]
    assert got == ["first:x"]


def test_a_broker_less_router_joins_the_broker_that_includes_it(memory_url: str) -> None:
    parent = StreamRouter(memory_url)
    child = StreamRouter(prefix="/child")
    got: list[str] = []

    @child.subscriber("child-ch")
    async def on_child(text: str) -> None:
        got.append(text)

    out = child.publisher("child-ch")

    @child.post("/send")
    async def send() -> None:
        await out.publish("hello")

    parent.include_router(child)
    app = FastAPI()
    app.include_router(parent)
    with TestClient(app) as client:
        assert child.broker is parent.broker
        client.post("/child/send")
        client.portal.call(eventually, lambda: got)  # type: ignore[union-attr]
    assert got == ["hello"]


def test_a_broker_less_router_with_subscribers_fails_at_startup() -> None:
    orphan = StreamRouter()

    @orphan.subscriber("x")
    async def handler() -> None: ...

    app = FastAPI()
    app.include_router(orphan)
    with pytest.raises(ConfigurationError, match="include it in one"), TestClient(app):
        pass
    with pytest.raises(ConfigurationError, match="no broker"):
        _ = orphan.broker


def test_router_dependencies_apply_to_message_handlers(memory_url: str) -> None:
    calls: list[str] = []

    async def audit() -> None:
        calls.append("audit")

    router = StreamRouter(memory_url, dependencies=[Depends(audit)])

    @router.subscriber("ch")
    async def handler() -> None:
        calls.append("handler")

    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        client.portal.call(router.broker.publish, None, "ch")  # type: ignore[union-attr]
        client.portal.call(eventually, lambda: "handler" in calls)  # type: ignore[union-attr]
    assert calls == ["audit", "handler"]


def test_dependency_overrides_of_the_app_reach_message_handlers(memory_url: str) -> None:
    def source() -> str:
        return "real"

    router = StreamRouter(memory_url)
    got: list[str] = []

    @router.subscriber("ch")
    async def handler(value: str = Depends(source)) -> None:
        got.append(value)

    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[source] = lambda: "override"
    with TestClient(app) as client:
        client.portal.call(router.broker.publish, None, "ch")  # type: ignore[union-attr]
        client.portal.call(eventually, lambda: got)  # type: ignore[union-attr]
    assert got == ["override"]


@pytest.mark.anyio
async def test_publishers_stack_in_either_order_and_carry_the_correlation_id(
    memory_url: str,
) -> None:
    router = StreamRouter(memory_url)
    results: list[tuple[str, str | None, str | None]] = []

    @router.publisher("out-a")
    @router.subscriber("in")
    @router.publisher("out-b")
    async def relay(text: str) -> Response:
        return Response(text.upper(), headers={"x-kind": "relayed"})

    @router.subscriber("out-a")
    @router.subscriber("out-b")
    async def sink(text: str, msg: StreamMessage) -> None:
        results.append((text, msg.correlation_id, msg.headers.get("x-kind")))

    async with router.broker as broker:
        await broker.publish("hi", "in", correlation_id="corr-1")
        await eventually(lambda: len(results) == 2)
    assert results == [("HI", "corr-1", "relayed")] * 2
    assert (await relay("x")).body == "X"  # still callable as the original function


@pytest.mark.anyio
async def test_return_values_reply_to_requests(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("add")
    async def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    async with router.broker as broker:
        reply = await broker.request({"a": 2, "b": 3}, "add", timeout=2)
    assert reply.decode() == {"sum": 5}


def test_health_routes_follow_prefixes_and_report_the_broker(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("ch")
    async def handler() -> None: ...

    app = FastAPI()
    outer = APIRouter(prefix="/svc")
    outer.include_router(router)
    app.include_router(outer)
    with TestClient(app) as client:
        assert client.get("/svc/health/live").status_code == 200
        ready = client.get("/svc/health/ready")
        assert ready.status_code == 200
        assert ready.json()["brokers"][0]["subscribers"][0]["running"] is True
        client.portal.call(router.broker.stop)  # type: ignore[union-attr]
        assert client.get("/svc/health/ready").status_code == 503
    assert "/svc/health/ready" not in app.openapi()["paths"]


def test_health_routes_can_be_turned_off(memory_url: str) -> None:
    app = FastAPI()
    app.include_router(StreamRouter(memory_url, health_url=None))
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 404


def test_unknown_or_missing_schemes_say_what_to_write() -> None:
    with pytest.raises(ConfigurationError, match="no scheme"):
        StreamRouter("localhost:9092")
    with pytest.raises(ConfigurationError, match="unknown scheme 'kafkaa'"):
        StreamRouter("kafkaa://user:hunter2@localhost")
    try:
        StreamRouter("kafkaa://user:hunter2@localhost")
    except ConfigurationError as exc:
        assert "hunter2" not in str(exc)


def test_include_router_dependencies_reach_included_message_handlers(memory_url: str) -> None:
    calls: list[str] = []

    async def parent_level() -> None:
        calls.append("parent")

    async def include_level() -> None:
        calls.append("include")

    parent = StreamRouter(memory_url, dependencies=[Depends(parent_level)])
    child = StreamRouter()

    @child.subscriber("ch")
    async def handler() -> None:
        calls.append("handler")

    parent.include_router(child, dependencies=[Depends(include_level)])
    app = FastAPI()
    app.include_router(parent)
    with TestClient(app) as client:
        client.portal.call(parent.broker.publish, None, "ch")  # type: ignore[union-attr]
        client.portal.call(eventually, lambda: "handler" in calls)  # type: ignore[union-attr]
    assert calls == ["parent", "include", "handler"]


def test_router_options_name_every_keyword_of_stream_router_and_api_router() -> None:
    """Broker routers (``KafkaRouter``...) take StreamRouter's and APIRouter's keyword
    arguments through ``RouterOptions``: it lists them all, and nothing else."""

    def keywords(cls: type) -> set[str]:
        parameters = inspect.signature(cls).parameters.values()
        return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}

    assert RouterOptions.__optional_keys__ == keywords(StreamRouter) | keywords(APIRouter)
