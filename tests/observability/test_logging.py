"""Log records written while a message is handled carry that message's context."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fastapi_stream import Logger, StreamRouter
from fastapi_stream.observability.logging import MessageContextFilter

pytestmark = pytest.mark.anyio


async def test_handler_and_framework_lines_carry_channel_subscriber_and_id(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    router = StreamRouter(memory_url, message_log_level=logging.INFO)
    done = asyncio.Event()

    @router.subscriber("orders.{region}")
    async def place(region: str, logger: Logger) -> None:
        logger.info("placing in %s", region)
        done.set()

    with caplog.at_level(logging.INFO, logger="fastapi_stream"):
        async with router.broker as broker:
            await broker.publish(None, "orders.eu", message_id="m-1")
            await asyncio.wait_for(done.wait(), 2)
            await asyncio.sleep(0.02)
    lines = [r for r in caplog.records if getattr(r, "message_id", "") == "m-1"]
    assert [r.getMessage() for r in lines][:2] == ["received message m-1", "placing in eu"]
    assert lines[-1].getMessage().startswith("message m-1 ack in ")
    assert {(r.channel, r.subscriber) for r in lines} == {  # type: ignore[attr-defined]
        ("orders.eu", place.func.__qualname__)
    }
    startup = [r.getMessage() for r in caplog.records if "listens on" in r.getMessage()]
    assert startup == [f"subscriber {place.func.__qualname__} listens on orders.{{region}}"]


async def test_by_default_only_failures_are_logged(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    router = StreamRouter(memory_url)
    done = asyncio.Event()

    @router.subscriber("quiet")
    async def quiet() -> None:
        done.set()

    with caplog.at_level(logging.DEBUG, logger="fastapi_stream"):
        async with router.broker as broker:
            caplog.clear()
            await broker.publish(None, "quiet")
            await asyncio.wait_for(done.wait(), 2)
            await asyncio.sleep(0.02)
            per_message = [r for r in caplog.records if getattr(r, "message_id", "")]
    assert per_message == []


def test_the_filter_gives_other_loggers_empty_context_outside_messages() -> None:
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello", None, None)
    assert MessageContextFilter().filter(record)
    assert record.stream_context == "-"  # type: ignore[attr-defined]
