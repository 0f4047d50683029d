"""What the workloads share: the models, a counter that ends a run, names, round trips."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import BaseModel

from bench.harness import Implementation

__all__ = [
    "BODY",
    "PAYLOAD",
    "TIMEOUT",
    "Done",
    "Order",
    "Receipt",
    "Request",
    "elapsed",
    "fresh",
    "receipt",
    "request_replies",
    "respond",
    "round_trips",
    "unique",
]

#: Every wait of a run is bounded by this many seconds: generous, but finite.
TIMEOUT = 120.0


class Order(BaseModel):
    """What every handler validates."""

    id: int
    sku: str
    amount: float


BODY = b'{"id": 1, "sku": "apple", "amount": 2.5}'
PAYLOAD = {"id": 1, "sku": "apple", "amount": 2.5}


class Receipt(BaseModel):
    """What the consume -> validate -> publish workloads send to their output channel, and
    what the request -> reply workloads answer."""

    id: int
    total: float


def receipt(order: Order) -> Receipt:
    return Receipt(id=order.id, total=order.amount * 2)


async def respond(order: Order) -> Receipt:
    """The frameworks' responder of the request -> reply workloads."""
    return receipt(order)


def unique(prefix: str) -> str:
    """A channel, stream or queue name of its own for one run."""
    return f"{prefix}-{os.urandom(4).hex()}"


class Done:
    """Counts handled messages; ``await done.wait()`` returns once all ``n`` were."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.event = asyncio.Event()

    def hit(self, k: int = 1) -> None:
        self.count += k
        if self.count >= self.n:
            self.event.set()

    async def wait(self) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), TIMEOUT)
        except TimeoutError:
            raise TimeoutError(
                f"{self.count:,} of {self.n:,} messages handled within {TIMEOUT:.0f} s"
            ) from None


async def elapsed(started: float, done: Done) -> float:
    """Seconds from ``started`` until the last message was handled."""
    await done.wait()
    return time.perf_counter() - started


#: One request -> reply round trip: an ``Order`` goes out, the reply's body comes back.
Request = Callable[[], Awaitable[bytes]]
#: Starts or closes what a run set up.
Start = Callable[[], Awaitable[object]]
#: ``prepare(name, extra, done)`` connects and registers a consumer of ``name`` and returns
#: ``(start, close)``; ``extra`` is the module's own (an output channel, a JetStream stream).
Prepare = Callable[[str, str, Done], Awaitable[tuple[Start, Start]]]
#: ``serve(name)`` connects, starts a responder on ``name`` and returns ``(request, close)``.
Serve = Callable[[str], Awaitable[tuple[Request, Start]]]


async def round_trips(n: int, request: Request) -> float:
    """Seconds ``n`` requests take, one after another, each reply checked as a ``Receipt``.

    One request goes first, off the clock: it sets up what a first request sets up lazily
    (a reply consumer, a reply topic, an inbox subscription).
    """
    Receipt.model_validate_json(await request())
    started = time.perf_counter()
    for _ in range(n):
        Receipt.model_validate_json(await request())
    return time.perf_counter() - started


async def framework_responder(
    broker: Any, subscribe: Callable[[Any], Any], channel: str, close: Callable[[], Awaitable[Any]]
) -> tuple[Request, Callable[[], Awaitable[Any]]]:
    """Either framework's side of a request -> reply run: ``subscribe`` registers
    :func:`respond` (on a FastStream broker or one of our routers), ``broker`` starts and
    makes the requests, ``close`` ends it all."""
    subscribe(respond)
    await broker.start()

    async def request() -> bytes:
        reply = await broker.request(PAYLOAD, channel, timeout=TIMEOUT)
        return reply.body  # type: ignore[no-any-return]

    return request, close


@contextlib.asynccontextmanager
async def _fresh_name(prefix: str) -> AsyncIterator[str]:
    yield unique(prefix)


def fresh(prefix: str) -> Callable[[], AbstractAsyncContextManager[str]]:
    """A channel of its own for each run, named ``prefix`` and a unique suffix (for
    brokers that need nothing made or removed around a run)."""
    return functools.partial(_fresh_name, prefix)


def request_replies(
    serves: Mapping[str, Serve], channel: Callable[[], AbstractAsyncContextManager[str]]
) -> dict[str, Implementation]:
    """A request -> reply workload's implementations: for each ``serve``, ``n`` round
    trips to the responder it starts on a channel that ``channel()`` makes for the run."""

    async def run(n: int, *, serve: Serve) -> float:
        async with channel() as name:
            request, close = await serve(name)
            try:
                return await round_trips(n, request)
            finally:
                async with asyncio.timeout(TIMEOUT):
                    await close()

    return {impl: functools.partial(run, serve=serve) for impl, serve in serves.items()}
