"""The common half of request/reply for transports: waiting requests by reply address.

A transport that receives replies on addresses of its own (an inbox channel, a reply
topic) gives each request a fresh address, publishes, and hands every reply it receives to
:meth:`Replies.resolve`; a timed-out request leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from fastapi_stream.core.errors import RequestTimeout
from fastapi_stream.core.message import OutgoingMessage

__all__ = ["Replies"]

T = TypeVar("T")


class Replies(Generic[T]):
    """Requests waiting for a reply, each on an address ``f"{prefix}.{n}"``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._waiting: dict[str, asyncio.Future[T]] = {}
        self._ids = itertools.count(1)

    def __contains__(self, address: str) -> bool:
        return address in self._waiting

    def __len__(self) -> int:
        return len(self._waiting)

    async def request(
        self,
        message: OutgoingMessage,
        timeout: float,
        publish: Callable[[OutgoingMessage], Awaitable[None]],
    ) -> T:
        """Set ``message.reply_to`` to a fresh address, publish, and wait for the reply;
        raise :class:`RequestTimeout` after ``timeout`` seconds."""
        address = f"{self.prefix}.{next(self._ids)}"
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting[address] = waiter
        message.reply_to = address
        try:
            async with asyncio.timeout(timeout):
                await publish(message)
                return await waiter
        except TimeoutError:
            raise RequestTimeout(f"no reply from {message.channel!r} within {timeout}s") from None
        finally:
            del self._waiting[address]

    def resolve(self, address: str, reply: T) -> bool:
        """Hand ``reply`` to the request waiting on ``address``; whether one was."""
        waiter = self._waiting.get(address)
        if waiter is None:
            return False
        if not waiter.done():
            waiter.set_result(reply)
        return True

    def fail_all(self, error: Exception) -> None:
        """Raise ``error`` in every waiting request (the transport is closing)."""
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(error)
