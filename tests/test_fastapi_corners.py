"""What FastAPI users reach for around the broker: lifespans, hooks, BackgroundTasks,
overrides in tests, and clear errors for FastStream's spellings (issue 16)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import BackgroundTasks, Depends, FastAPI
from fastapi.testclient import TestClient

from fastapi_stream import ConfigurationError, StreamRouter
from fastapi_stream.memory.transport import MemoryTransport
from fastapi_stream.redis import RedisRouter
from fastapi_stream.testing import StreamTestWarning, TestStreamBroker
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


def _memory() -> StreamRouter:
    return StreamRouter(f"memory://{uuid.uuid4().hex}")


def _redis() -> StreamRouter:
    return RedisRouter("redis://127.0.0.1:6379/0")


BROKERS = [
    pytest.param(_memory, id="memory"),
    pytest.param(_redis, id="redis", marks=pytest.mark.redis),
]


def _app(router: StreamRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


# -- 1. a router's lifespan runs inside the broker's lifetime ---------------------------


@pytest.mark.parametrize("make", BROKERS)
async def test_a_router_lifespan_may_publish_at_startup(make: Callable[[], StreamRouter]) -> None:
    channel = f"corners.started.{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    service = make()  # the router whose lifespan announces it
    listener = make()  # another service on the same broker
    if isinstance(service.broker.transport, MemoryTransport):
        listener = StreamRouter(service.broker.transport)

    @listener.subscriber(channel)
    async def started(text: str) -> None:
        seen.append(text)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.broker.publish("service started", channel)
        yield

    service._user_lifespan = lifespan
    app = _app(service)
    async with listener.broker, app.router.lifespan_context(app):
        await eventually(lambda: seen, "the startup message")
    assert seen == ["service started"]


def _announcing_app() -> tuple[StreamRouter, Any, FastAPI]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await announcements.publish("warm-up")
        yield

    router = StreamRouter("memory://", lifespan=lifespan)
    announcements = router.publisher("corners.announcements")
    return router, announcements, _app(router)


async def test_a_router_lifespan_publishes_under_the_test_broker_too() -> None:
    router, announcements, app = _announcing_app()
    async with TestStreamBroker(router, app=app):
        announcements.mock.assert_called_once_with("warm-up")


def test_a_router_lifespan_publishes_under_the_test_broker_beside_test_client() -> None:
    router, announcements, app = _announcing_app()
    with TestStreamBroker(router), TestClient(app):
        announcements.mock.assert_called_once_with("warm-up")


# -- 2. whoever starts the broker closes it -----------------------------------------------


async def test_an_app_inside_a_test_broker_leaves_the_broker_to_it() -> None:
    router = _memory()
    seen: list[int] = []

    @router.subscriber("corners.numbers")
    async def numbers(n: int) -> None:
        seen.append(n)

    app = _app(router)
    async with TestStreamBroker(router) as broker:
        with TestClient(app):
            pass
        await broker.publish(1, "corners.numbers")  # the app's shutdown did not close it
    assert seen == [1]
    assert not router.broker.started


# -- 3. startup and shutdown hooks ----------------------------------------------------------


@pytest.mark.parametrize("make", BROKERS)
def test_hooks_run_with_the_broker_connected(make: Callable[[], StreamRouter]) -> None:
    router = make()
    channel = f"corners.hooks.{uuid.uuid4().hex[:8]}"
    events: list[str] = []

    @router.subscriber(channel)
    async def hello(text: str) -> None:
        events.append(f"handled {text}")

    @router.after_startup
    async def announce(app: FastAPI) -> dict[str, Any]:
        events.append(f"startup {type(app).__name__}")
        await router.broker.publish("hi", channel)
        return {"greeting": "hello"}

    @router.on_broker_shutdown
    def goodbye(app: FastAPI) -> None:
        events.append(f"shutdown, connected={router.broker.transport is not None}")

    app = _app(router)
    with TestClient(app) as client:
        client.portal.call(eventually, lambda: "handled hi" in events, "the hook's message")
        assert app.state.greeting == "hello"
        assert router.broker.state.greeting == "hello"
    assert events == ["startup FastAPI", "handled hi", "shutdown, connected=True"]


async def test_hooks_run_under_the_test_broker() -> None:
    router = _memory()
    events: list[str] = []

    @router.after_startup
    def up(app: Any) -> None:
        events.append(f"up {app is None}")

    @router.on_broker_shutdown
    async def down(app: Any) -> None:
        events.append("down")

    async with TestStreamBroker(router):
        assert events == ["up True"]  # no app: the hook gets None
    assert events == ["up True", "down"]


# -- 4. BackgroundTasks in a message handler ---------------------------------------------


async def test_background_tasks_run_after_the_handler_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = _memory()
    events: list[str] = []

    def audit(order_id: int) -> None:
        events.append(f"audit {order_id}")

    async def broken() -> None:
        raise RuntimeError("the audit service is down")

    @router.subscriber("corners.orders")
    async def take(order_id: int, tasks: BackgroundTasks) -> None:
        tasks.add_task(audit, order_id)
        tasks.add_task(broken)
        tasks.add_task(audit, order_id + 1)
        events.append(f"handled {order_id}")

    async with router.broker as broker:
        await broker.publish(5, "corners.orders")
        await eventually(lambda: len(events) == 3, "the handler and both audits")
    assert events == ["handled 5", "audit 5", "audit 6"]
    assert "background task" in caplog.text and "broken" in caplog.text
    assert take.call_count == 1  # not retried: the message was acknowledged


# -- 5. dependency_overrides without TestClient --------------------------------------------


def real_database() -> str:
    return "production"


async def test_the_test_broker_applies_the_apps_overrides_when_given_the_app() -> None:
    router = _memory()
    seen: list[str] = []

    @router.subscriber("corners.db")
    async def use(n: int, db: str = Depends(real_database)) -> None:
        seen.append(db)

    app = _app(router)
    app.dependency_overrides[real_database] = lambda: "test database"
    async with TestStreamBroker(router, app=app) as broker:
        await broker.publish(1, "corners.db")
    assert seen == ["test database"]

    with pytest.warns(StreamTestWarning, match="app=app"):  # the silent case is loud
        async with TestStreamBroker(router) as broker:
            await broker.publish(2, "corners.db")
    assert seen == ["test database", "production"]


# -- 6 and 7. FastStream's spellings fail at registration, saying what to write ----------


def test_a_broker_option_on_a_stream_router_says_what_to_write() -> None:
    router = StreamRouter("redis://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match=r"subscriber\('jobs', list=True\)"):
        router.subscriber(list="jobs")
    with pytest.raises(ConfigurationError, match="RedisRouter"):
        router.publisher(stream="events")


def test_an_option_object_where_a_channel_name_belongs_fails_at_registration() -> None:
    class RabbitQueueLike:
        name = "out"

    router = _memory()
    with pytest.raises(ConfigurationError, match=r"publisher\('out'\)"):
        router.publisher(RabbitQueueLike())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="channel name"):
        router.subscriber(RabbitQueueLike())  # type: ignore[arg-type]


def test_no_logging_noise_from_hooks_without_an_app(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    router = _memory()
    router.on_broker_shutdown(lambda app: None)
    with TestClient(_app(router)):
        pass
    assert not caplog.records


def test_rabbit_publisher_takes_a_queue_and_refuses_a_bad_exchange_at_once() -> None:
    from fastapi_stream.rabbit import RabbitQueue, RabbitRouter

    router = RabbitRouter("amqp://guest:guest@127.0.0.1:5672/", exchange="orders")
    out = router.publisher(RabbitQueue("out"))  # FastStream's spelling
    assert (out.channel, out.options["exchange"]) == ("out", "")  # the default exchange
    with pytest.raises(ConfigurationError, match="exchange must be a name or a RabbitExchange"):
        router.publisher("out", exchange=42)  # type: ignore[arg-type]
