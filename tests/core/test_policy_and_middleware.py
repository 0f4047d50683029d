"""Ack policies, retry budgets, middlewares and what reaches the logs."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_stream import (
    AckPolicy,
    ConfigurationError,
    Middleware,
    OutgoingMessage,
    Retry,
    Settlement,
    StreamMessage,
    StreamRouter,
)
from fastapi_stream.core.middleware import ConsumeNext, PublishNext
from tests import waiting

pytestmark = pytest.mark.anyio


class Secret(BaseModel):
    password: int


# Handlers here answer within milliseconds: two seconds is generous.
eventually = functools.partial(waiting.eventually, timeout=2.0)


def test_retry_delays_grow_and_are_capped() -> None:
    retry = Retry(max_attempts=5, backoff=1, multiplier=2, max_backoff=3, jitter=0)
    assert [retry.delay(n) for n in range(1, 5)] == [1, 2, 3, 3]
    assert 0.9 <= Retry(backoff=1, jitter=0.1).delay(1) <= 1.1
    with pytest.raises(ValueError, match="max_attempts"):
        Retry(max_attempts=0)


async def test_ack_first_settles_before_the_handler_and_loses_failures(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    seen: list[Settlement | None] = []

    @router.subscriber("ch", ack_policy=AckPolicy.ACK_FIRST)
    async def handler(msg: StreamMessage) -> None:
        seen.append(msg.settlement)
        raise RuntimeError("lost on purpose")

    async with router.broker as broker:
        await broker.publish(None, "ch")
        await eventually(lambda: seen)
        await asyncio.sleep(0.05)
    assert seen == [Settlement.ACK]  # never redelivered


async def test_manual_policy_leaves_settling_to_the_handler(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    deliveries: list[int | None] = []

    @router.subscriber("ch", ack_policy=AckPolicy.MANUAL, retry=Retry(backoff=0.01))
    async def handler(msg: StreamMessage) -> None:
        deliveries.append(msg.delivery_attempt)
        if msg.delivery_attempt == 1:
            await msg.nack()
        else:
            await msg.ack()

    async with router.broker as broker:
        await broker.publish(None, "ch")
        await eventually(lambda: len(deliveries) == 2)
    assert deliveries == [1, 2]


async def test_retry_false_rejects_after_one_delivery(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    deliveries: list[int | None] = []

    @router.subscriber("ch", retry=False)
    async def handler(msg: StreamMessage) -> None:
        deliveries.append(msg.delivery_attempt)
        raise RuntimeError("no second chance")

    async with router.broker as broker:
        await broker.publish(None, "ch")
        await eventually(lambda: deliveries)
        await asyncio.sleep(0.05)
    assert deliveries == [1]


async def test_a_subscriber_of_the_dead_letters_does_not_dead_letter_to_itself(
    memory_url: str,
) -> None:
    router = StreamRouter(memory_url, dead_letter="dead", retry=Retry(max_attempts=2, backoff=0.01))
    seen: list[str] = []

    @router.subscriber("orders")
    async def place(msg: StreamMessage) -> None:
        raise RuntimeError("cannot place")

    @router.subscriber("dead")
    async def audit(msg: StreamMessage) -> None:
        seen.append(msg.headers["x-original-channel"])
        raise RuntimeError("the audit store is down too")

    async with router.broker as broker:
        await broker.publish({"id": 1}, "orders")
        await eventually(lambda: len(seen) >= 2)
        await asyncio.sleep(0.2)  # a loop would go on: its rejects back to "dead"
    assert seen == ["orders", "orders"]  # its own attempts, then dropped


async def test_a_dead_letter_channel_that_is_the_subscribers_own_fails_at_start(
    memory_url: str,
) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("orders.{region}", dead_letter="orders.dead")
    async def place(msg: StreamMessage) -> None: ...

    with pytest.raises(ConfigurationError, match="rejects would come back to it forever"):
        await router.broker.start()
    await router.broker.close()


async def test_invalid_payloads_are_logged_once_without_their_values(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("secrets")
    async def handler(secret: Secret) -> None: ...

    with caplog.at_level(logging.INFO, logger="fastapi_stream"):
        async with router.broker as broker:
            await broker.publish({"password": "hunter2"}, "secrets")
            await eventually(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
            await asyncio.sleep(0.05)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "body.password" in errors[0] and "secrets" in errors[0]
    assert "hunter2" not in caplog.text


class Recorder(Middleware):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def consume(self, message: StreamMessage, call_next: ConsumeNext) -> Any:
        self.events.append(f"consume {message.channel}")
        result = await call_next(message)
        self.events.append(f"result {result}")
        return result

    async def publish(self, message: OutgoingMessage, call_next: PublishNext) -> None:
        message.headers["x-seen-by"] = "recorder"
        self.events.append(f"publish {message.channel}")
        await call_next(message)


async def test_middlewares_wrap_consume_and_every_publish(memory_url: str) -> None:
    events: list[str] = []
    router = StreamRouter(memory_url, middlewares=[Recorder(events)])
    headers: list[str | None] = []

    @router.subscriber("in")
    @router.publisher("out")
    async def double(value: int) -> int:
        return value * 2

    @router.subscriber("out")
    async def sink(value: int, msg: StreamMessage) -> None:
        headers.append(msg.headers.get("x-seen-by"))

    async with router.broker as broker:
        await broker.publish(21, "in")
        await eventually(lambda: headers)
    assert headers == ["recorder"]
    assert events[:4] == ["publish in", "consume in", "publish out", "result 42"]
