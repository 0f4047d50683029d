"""What the real-broker workloads share: the models, a counter that ends a run, names."""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel

from bench.memory import BODY, PAYLOAD, Order

__all__ = [
    "BODY",
    "PAYLOAD",
    "TIMEOUT",
    "Done",
    "Order",
    "Receipt",
    "elapsed",
    "receipt",
    "unique",
]

#: Every wait of a run is bounded by this many seconds: generous, but finite.
TIMEOUT = 120.0


class Receipt(BaseModel):
    """What the consume -> validate -> publish workloads send to their output channel."""

    id: int
    total: float


def receipt(order: Order) -> Receipt:
    return Receipt(id=order.id, total=order.amount * 2)


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
        await asyncio.wait_for(self.event.wait(), TIMEOUT)


async def elapsed(started: float, done: Done) -> float:
    """Seconds from ``started`` until the last message was handled."""
    await done.wait()
    return time.perf_counter() - started
