"""Helpers for the RabbitMQ tests: unique names, and one way to run a routing scenario
on the real broker or on the test broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aio_pika
import pytest

from fastapi_stream.rabbit import RabbitRouter
from fastapi_stream.testing import TestStreamBroker
from tests.waiting import eventually

URL = "amqp://guest:guest@127.0.0.1:5672/"

#: A routing test runs once on the test broker and once on the real RabbitMQ.
MODES = [
    pytest.param("test-broker", id="test-broker"),
    pytest.param("real", id="real", marks=pytest.mark.rabbit),
]


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def admin() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain aio-pika channel to set up and clean up what a test needs."""
    connection = await aio_pika.connect(URL)
    async with connection:
        yield await connection.channel()


def router(uid: str, **options: Any) -> RabbitRouter:
    """A router whose connection `rabbitmqctl` can find by the test's ``uid``."""
    return RabbitRouter(URL, connection_name=f"fastapi-stream test {uid}", **options)


async def publish_all(
    mode: str,
    rabbit: RabbitRouter,
    publishes: Sequence[tuple[Any, str, dict[str, Any]]],
    *,
    expect: Callable[[], bool],
) -> None:
    """Start ``rabbit`` (for real, or in the test broker), publish, and wait until
    ``expect()`` holds, then a little longer for deliveries that must not happen."""
    if mode == "test-broker":
        async with TestStreamBroker(rabbit) as broker:
            for body, routing_key, options in publishes:
                await broker.publish(body, routing_key, **options)
        return
    async with rabbit.broker as broker:
        for body, routing_key, options in publishes:
            await broker.publish(body, routing_key, **options)
        await eventually(expect, "expected deliveries")
        await asyncio.sleep(0.2)


async def _run(*command: str, timeout: float = 15.0) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"{command[:2]} failed: {out.decode(errors='replace')}")
    return out.decode(errors="replace")


async def connections_named(name: str) -> list[str]:
    """The server-side ids of the connections whose client-provided name ends in ``name``."""
    listing = await _run("rabbitmqctl", "list_connections", "pid", "client_properties", "-q")
    return [line.split("\t", 1)[0] for line in listing.splitlines() if f'{name}"' in line]


async def close_connections_named(name: str) -> list[str]:
    """Close, from the server side, the RabbitMQ connections whose client-provided name
    ends in ``name``: only this test's own, never the others on the shared broker."""
    pids = await connections_named(name)
    for pid in pids:
        await _run("rabbitmqctl", "close_connection", pid, "closed by a fastapi-stream test")
    return pids
