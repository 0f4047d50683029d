"""``memory://``: the in-process broker as a transport."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi_stream.core.errors import BrokerNotConnected
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.transport import (
    Deliver,
    Routing,
    Subscription,
    SubscriptionSpec,
    Transport,
)
from fastapi_stream.core.url import redact
from fastapi_stream.memory.engine import Consumer, MemoryEngine

__all__ = ["MemoryTransport", "engine_for"]

_engines: dict[str, MemoryEngine] = {}


def engine_for(name: str) -> MemoryEngine:
    """The process-wide engine called ``name``: routers given the same ``memory://name``
    URL talk to each other."""
    engine = _engines.get(name)
    if engine is None:
        engine = _engines[name] = MemoryEngine()
    return engine


class MemoryTransport(Transport):
    """Connects a broker to a :class:`MemoryEngine` (``memory://`` or ``memory://name``)."""

    schemes = ("memory",)

    def __init__(self, url_or_engine: str | MemoryEngine = "memory://") -> None:
        if isinstance(url_or_engine, MemoryEngine):
            self.engine = url_or_engine
            self.name = "inline" if url_or_engine.inline else "private"
        else:
            self.name = urlsplit(url_or_engine).netloc or "default"
            self.engine = engine_for(self.name)
        self._connected = False
        self._consumers: list[Consumer] = []

    @classmethod
    def from_url(cls, url: str) -> MemoryTransport:
        return cls(url)

    def describe(self) -> str:
        return redact(f"memory://{self.name}")

    def routing(self) -> Routing:
        return self.engine.routing

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()
            consumer.release()

    async def ping(self, timeout: float) -> bool:
        return self._connected

    def _check(self) -> None:
        if not self._connected:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")

    async def publish(self, message: OutgoingMessage) -> None:
        self._check()
        await self.engine.publish(message)

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        self._check()
        reply = await self.engine.request(message, timeout)
        return StreamMessage(
            reply.body,
            channel=reply.channel,
            headers=reply.headers,
            message_id=reply.message_id,
            correlation_id=reply.correlation_id,
            content_type=reply.content_type,
            raw_message=reply,
        )

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        self._check()
        consumer = self.engine.subscribe(spec, deliver)
        self._consumers.append(consumer)
        return consumer
