"""``memory://``: the in-process broker as a transport."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from fastapi_stream.core.errors import BrokerNotConnected, ConfigurationError
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.transport import (
    Deliver,
    Routing,
    Subscription,
    SubscriptionSpec,
    Transport,
)
from fastapi_stream.core.url import redact
from fastapi_stream.memory.engine import MemoryEngine, MemorySubscription

__all__ = ["MemoryTransport", "engine_for"]

_engines: dict[str, MemoryEngine] = {}


def engine_for(
    name: str, *, max_queue: int = 10_000, publish_timeout: float = 10.0
) -> MemoryEngine:
    """The process-wide engine called ``name``: routers given the same ``memory://name``
    URL talk to each other. The settings apply when the engine is made."""
    engine = _engines.get(name)
    if engine is None:
        engine = MemoryEngine(max_queue=max_queue, publish_timeout=publish_timeout)
        _engines[name] = engine
    return engine


def _engine_from_url(name: str, query: str) -> MemoryEngine:
    """``max_queue`` and ``publish_timeout`` come from the URL's query string."""
    options = dict(parse_qsl(query))
    unknown = set(options) - {"max_queue", "publish_timeout"}
    if unknown:
        raise ConfigurationError(
            f"memory:// takes max_queue and publish_timeout, not {', '.join(sorted(unknown))}"
        )
    try:
        return engine_for(
            name,
            max_queue=int(options.get("max_queue", 10_000)),
            publish_timeout=float(options.get("publish_timeout", 10.0)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"memory:// settings must be numbers: {exc}") from None


class MemoryTransport(Transport):
    """Connects a broker to a :class:`MemoryEngine`: ``memory://``, ``memory://name``, and
    ``memory://name?max_queue=50000&publish_timeout=5`` to size a new engine's groups."""

    schemes = ("memory",)

    def __init__(self, url_or_engine: str | MemoryEngine = "memory://") -> None:
        if isinstance(url_or_engine, MemoryEngine):
            self.engine = url_or_engine
            self.name = "inline" if url_or_engine.inline else "private"
        else:
            parts = urlsplit(url_or_engine)
            self.name = parts.netloc or "default"
            self.engine = _engine_from_url(self.name, parts.query)
        self._connected = False
        self._consumers: list[MemorySubscription] = []

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
            await consumer.close()

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
        return StreamMessage.of(await self.engine.request(message, timeout))

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        self._check()
        consumer = self.engine.subscribe(spec, deliver)
        self._consumers.append(consumer)
        return consumer
