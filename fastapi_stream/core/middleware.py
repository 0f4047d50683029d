"""Middlewares: code that wraps every consume and every publish of a broker or subscriber.

Subclass :class:`Middleware` and override what you need; each hook gets the message and
the next step of the chain, like a Starlette ``BaseHTTPMiddleware``::

    class Timing(Middleware):
        async def consume(self, message, call_next):
            started = time.perf_counter()
            try:
                return await call_next(message)
            finally:
                metrics.observe(time.perf_counter() - started)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi_stream.core.message import OutgoingMessage, StreamMessage

if TYPE_CHECKING:
    from fastapi_stream.core.broker import StreamBroker

__all__ = ["ConsumeNext", "Middleware", "PublishNext", "chain_consume", "chain_publish"]

ConsumeNext = Callable[[StreamMessage], Awaitable[Any]]
PublishNext = Callable[[OutgoingMessage], Awaitable[None]]


class Middleware:
    """Pass-through hooks around consuming and publishing."""

    def setup(self, broker: StreamBroker) -> None:
        """Called when ``broker`` connects, before any message flows through it."""

    async def consume(self, message: StreamMessage, call_next: ConsumeNext) -> Any:
        """Wraps decoding, validation, the handler call and the publishing of its result;
        returns the handler's result."""
        return await call_next(message)

    async def publish(self, message: OutgoingMessage, call_next: PublishNext) -> None:
        """Wraps every publish: direct ones, handler results, replies and requests."""
        await call_next(message)

    async def settled(self, message: StreamMessage, error: Exception | None) -> None:
        """Called once the message was settled (``message.settlement``), with the
        exception the pipeline raised, if any. Not called for cancelled handlers."""


def chain_consume(middlewares: Sequence[Middleware], last: ConsumeNext) -> ConsumeNext:
    """Compose the consume hooks once, outermost first, ending in ``last``."""
    call = last
    for middleware in reversed(middlewares):
        call = _bind_consume(middleware, call)
    return call


def chain_publish(middlewares: Sequence[Middleware], last: PublishNext) -> PublishNext:
    """Compose the publish hooks once, outermost first, ending in ``last``."""
    call = last
    for middleware in reversed(middlewares):
        call = _bind_publish(middleware, call)
    return call


def _bind_consume(middleware: Middleware, call_next: ConsumeNext) -> ConsumeNext:
    async def consume(message: StreamMessage) -> Any:
        return await middleware.consume(message, call_next)

    return consume


def _bind_publish(middleware: Middleware, call_next: PublishNext) -> PublishNext:
    async def publish(message: OutgoingMessage) -> None:
        await middleware.publish(message, call_next)

    return publish
