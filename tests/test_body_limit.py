"""``max_body_bytes``: an oversized body never reaches decoding, and is never published."""

from __future__ import annotations

import logging
import uuid

import pytest

from fastapi_stream import PublishError, StreamMessage, StreamRouter
from fastapi_stream.redis import RedisRouter
from tests.brokers import ensure
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = "do-not-log-me"


def _routers(kind: str, limit: int) -> tuple[StreamRouter, StreamRouter]:
    """A consumer with ``limit`` and a producer without one, on the same broker."""
    if kind == "memory":
        url = f"memory://{uuid.uuid4().hex}"
        return StreamRouter(url, max_body_bytes=limit), StreamRouter(url, max_body_bytes=None)
    ensure("redis")
    url = "redis://127.0.0.1:6379/0"
    consumer = RedisRouter(url, default_kind="stream", max_body_bytes=limit)
    return consumer, RedisRouter(url, default_kind="stream", max_body_bytes=None)


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_an_oversized_message_is_dead_lettered_before_decoding(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"limits.{uuid.uuid4().hex[:8]}"
    consumer, producer = _routers(kind, limit=1000)
    handled: list[str] = []
    dead: list[StreamMessage] = []

    @consumer.subscriber(name, dead_letter=f"{name}.dead", group="g")
    async def handle(text: str) -> None:
        handled.append(text)

    @consumer.subscriber(f"{name}.dead", group="g", max_body_bytes=10_000_000)
    async def dead_letters(msg: StreamMessage) -> None:
        dead.append(msg)

    async with consumer.broker, producer.broker as raw:
        await raw.publish(SECRET * 1000, name)  # 13 kB, over the consumer's 1 kB
        await raw.publish("small", name)
        await eventually(lambda: handled == ["small"] and len(dead) == 1, "the small one handled")

    assert dead[0].headers["x-dead-letter-reason"].startswith("body of 1")
    assert "over the limit of 1000 (max_body_bytes)" in dead[0].headers["x-dead-letter-reason"]
    rejected = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("max_body_bytes" in r.getMessage() for r in rejected)
    assert SECRET not in caplog.text


async def test_publishing_an_oversized_message_raises_at_once() -> None:
    router = StreamRouter(f"memory://{uuid.uuid4().hex}", max_body_bytes=100)
    async with router.broker as broker:
        with pytest.raises(PublishError, match="over the limit of 100"):
            await broker.publish("x" * 200, "anywhere")
        await broker.publish("x" * 50, "anywhere")  # below the limit: fine


def test_the_default_limit_is_one_mebibyte() -> None:
    assert StreamRouter("memory://").broker.max_body_bytes == 1024 * 1024
