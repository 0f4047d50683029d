"""examples/transport: the example transport of docs/transports.md behind a router.

The conformance suite holds it to every broker's behaviour (its ``example`` case); this
test shows the few lines a user writes to plug a transport in.
"""

from __future__ import annotations

import uuid

import pytest

from examples.transport.queues import QueueTransport
from fastapi_stream import Retry, StreamRouter
from tests.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_a_router_on_the_example_transport() -> None:
    router = StreamRouter(QueueTransport(uuid.uuid4().hex), retry=Retry(backoff=0.01))
    seen: list[int] = []

    @router.subscriber("numbers", group="doublers")
    @router.publisher("doubled")
    async def double(n: int) -> int:
        seen.append(n)
        if len(seen) == 1:
            raise RuntimeError("the first attempt fails, the core retries it")
        return 2 * n

    @router.subscriber("doubled")
    async def echo(n: int) -> int:
        return n

    async with router.broker as broker:
        await broker.publish(21, "numbers")
        await eventually(lambda: seen == [21, 21], "the retry")
        reply = await broker.request(4, "doubled", timeout=2)
    assert reply.decode() == 4
