"""Request/reply for every transport: requests waiting for their reply, by correlation id.

A transport that receives replies on an address of its own (an inbox channel, a reply
topic, RabbitMQ's direct reply-to) publishes each request with ``reply_to`` set to that
address through :meth:`Replies.request`, and hands every message arriving there to
:meth:`Replies.resolve`. The responder copies the request's correlation id onto its
reply (the core does), which finds the waiting request. A timed-out request leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from fastapi_stream.core.errors import RequestTimeout, StreamError
from fastapi_stream.core.message import OutgoingMessage, new_message_id

__all__ = ["Replies"]

T = TypeVar("T")


class Replies(Generic[T]):
    """Requests waiting for a reply, each under its correlation id."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    async def request(
        self,
        message: OutgoingMessage,
        reply_to: str,
        timeout: float,
        publish: Callable[[OutgoingMessage], Awaitable[None]],
    ) -> T:
        """Publish ``message`` asking for its reply at ``reply_to`` and wait for it; raise
        :class:`RequestTimeout` after ``timeout`` seconds."""
        correlation_id = message.correlation_id or new_message_id()
        if correlation_id in self._waiting:
            raise StreamError(f"a request with correlation id {correlation_id!r} is waiting")
        message.correlation_id = correlation_id
        message.reply_to = reply_to
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = waiter
        try:
            async with asyncio.timeout(timeout):
                await publish(message)
                return await waiter
        except TimeoutError:
            raise RequestTimeout(f"no reply from {message.channel!r} within {timeout}s") from None
        finally:
            del self._waiting[correlation_id]

    def resolve(self, correlation_id: str | None, reply: T) -> bool:
        """Hand ``reply`` to the request waiting under ``correlation_id``; whether one was."""
        waiter = self._waiting.get(correlation_id or "")
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
