"""The core's promises when the broker itself goes away, on broker instances of their own.

Each case starts a private broker on a port of its own (``tests/faults/instances.py``),
kills it by PID and starts it again on the same data (Kafka: the proxy in front of
it, see ``KafkaBehindProxy``); the shared brokers are never touched. Two promises, for
every durable transport:

* a retry that falls due while the broker is down is made once the broker is back,
  within the backoff cap + 5 s, and nothing is lost;
* an app started while its broker is down answers ``/health/live`` at once and
  ``/health/ready`` with 503, then reports ready and handles messages once the broker
  starts, with no restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_stream import Backoff, Retry, StreamRouter
from fastapi_stream.kafka import KafkaRouter, KafkaTopic
from fastapi_stream.nats import JStream, NatsRouter
from fastapi_stream.rabbit import RabbitRouter
from fastapi_stream.redis import RedisRouter
from tests.faults.instances import Instance, KafkaBehindProxy, Nats, Rabbit, Redis
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

#: Short, so that the cases are quick; the promise is "within cap + 5 s".
BACKOFF = Backoff(first=0.1, cap=1.0)
RECOVERY = BACKOFF.cap + 5.0


class _Redis(Redis):
    port = 6395


class _Nats(Nats):
    port = 4227


@dataclass(frozen=True)
class Durable:
    """A durable transport on a private broker: its router, how to subscribe and publish."""

    name: str
    instance: Callable[[], Instance]
    router: Callable[..., StreamRouter]
    subscribe: Callable[[StreamRouter, str], Any]
    publish: dict[str, Any]
    #: Seconds a new declaration takes to survive a ``kill -9``: RabbitMQ writes a queue's
    #: record (Mnesia) a moment after declare-ok, and a node killed 0.2 s after the
    #: declare came back with no queue ("Recovering 0 queues") and so without the message.
    settle: float = 0.0


#: A member that leaves is noticed in a second, so a restarted consumer rejoins at once.
FAST_GROUPS: dict[str, Any] = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 250}

#: File storage: the stream and its messages survive the kill.
JOBS = JStream("jobs", subjects=["jobs.>"])

DURABLE = [
    Durable(
        "redis-stream",
        _Redis,
        RedisRouter,
        lambda router, name: router.subscriber(stream=name, group="workers"),
        {"stream": True},
    ),
    Durable(
        "redis-list",
        _Redis,
        RedisRouter,
        lambda router, name: router.subscriber(list=name),
        {"list": True},
    ),
    Durable(
        "rabbit",
        Rabbit,  # a second node, up in about 20 s: the slowest case
        RabbitRouter,
        lambda router, name: router.subscriber(name),
        {},
        settle=2.0,
    ),
    Durable(
        "kafka",
        KafkaBehindProxy,  # tansu keeps its log in memory: the outage is its proxy's
        lambda url, **options: KafkaRouter(
            url.removeprefix("kafka://"),
            topics=[KafkaTopic(f"jobs.{name}") for name in ("down", "late")],
            **options,
        ),
        lambda router, name: router.subscriber(
            name, group_id="workers", auto_offset_reset="earliest", **FAST_GROUPS
        ),
        {},
    ),
    Durable(
        "jetstream",
        _Nats,
        NatsRouter,
        lambda router, name: router.subscriber(name, stream=JOBS, durable="workers"),
        {},
    ),
]


@pytest.fixture(params=DURABLE, ids=lambda case: case.name)
def durable(request: pytest.FixtureRequest) -> Iterator[tuple[Durable, Instance]]:
    case: Durable = request.param
    instance = case.instance()
    try:
        yield case, instance
    finally:
        instance.close()


def _router(case: Durable, url: str) -> StreamRouter:
    return case.router(url, reconnect=BACKOFF, retry=Retry(max_attempts=5, backoff=1.0, jitter=0))


async def test_a_retry_due_while_the_broker_is_down_is_made_when_it_is_back(
    durable: tuple[Durable, Instance],
) -> None:
    case, broker_process = durable
    await asyncio.to_thread(broker_process.start)
    router = _router(case, broker_process.url)
    attempts: list[int] = []

    @case.subscribe(router, "jobs.down")
    async def handle(n: int) -> None:
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails; its retry is due in 1 s")

    async with router.broker as broker:
        await asyncio.sleep(case.settle)  # the queue (or stream) outlives the kill below
        await broker.publish(7, "jobs.down", **case.publish)
        await eventually(lambda: attempts == [7], "the first attempt")
        await asyncio.to_thread(broker_process.kill)
        await asyncio.sleep(2.0)  # the retry falls due meanwhile
        await asyncio.to_thread(broker_process.start)
        back = time.monotonic()
        await eventually(lambda: len(attempts) >= 2, "the retry after the restart", RECOVERY)
        took = time.monotonic() - back
    assert attempts[:2] == [7, 7]
    assert took <= RECOVERY


def test_an_app_starts_while_its_broker_is_down_and_recovers(
    durable: tuple[Durable, Instance],
) -> None:
    case, broker_process = durable
    router = _router(case, broker_process.url)
    seen: list[int] = []

    @case.subscribe(router, "jobs.late")
    async def handle(n: int) -> None:
        seen.append(n)

    app = FastAPI()
    app.include_router(router)
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert f"127.0.0.1:{broker_process.port}" in ready.text  # names the broker

        broker_process.start()
        deadline = time.monotonic() + RECOVERY
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready within the backoff cap + 5 s"
            time.sleep(0.1)
        client.portal.call(lambda: router.broker.publish(3, "jobs.late", **case.publish))
        deadline = time.monotonic() + 5
        while seen != [3]:
            assert time.monotonic() < deadline, f"not handled after the broker started: {seen}"
            time.sleep(0.02)
