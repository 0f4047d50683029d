"""The seam between the broker-agnostic core and one broker's client library.

A transport moves bytes: it connects, publishes :class:`OutgoingMessage`, delivers
:class:`StreamMessage` objects (which it subclasses to settle them with its broker) and
answers requests. Decoding, validation, dependency injection, middlewares and the ack
policy all live above it, once, in the core.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.message import OutgoingMessage, StreamMessage

__all__ = ["DEFAULT_ROUTING", "Deliver", "Routing", "Subscription", "SubscriptionSpec", "Transport"]

#: Called by a transport with messages it fetched. It returns once the core is done with
#: them (processed, or handed to workers when the subscriber is concurrent). A transport
#: that fetches in batches passes the whole batch at once.
Deliver = Callable[[Sequence[StreamMessage]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What to consume: a channel pattern, an optional consumer group and broker options."""

    channel: ChannelPattern
    #: Competing consumers share a group; every group gets every message. ``None`` means a
    #: private group: this subscriber gets every message.
    group: str | None = None
    #: How many delivered-but-unsettled messages the transport may hand out at once.
    prefetch: int = 100
    #: How many messages the core handles at once (``max_workers``). Above 1, ``deliver``
    #: returns once a message is handed to a worker, before it is processed.
    max_workers: int = 1
    #: The core hands each ``deliver`` call to the handler as one list (``batch=True``).
    batch: bool = False
    #: Deliveries a failing message gets before the core gives up on it, so brokers that
    #: count deliveries themselves (JetStream max_deliver, quorum queues) can match it.
    max_attempts: int | None = None
    #: Broker-specific options (exchange, partitions, stream...) read by that broker only.
    options: Mapping[str, Any] = field(default_factory=dict)


class Routing:
    """Which subscriptions a published message reaches, in one broker's terms.

    The memory engine routes with these rules. A transport whose broker routes in its own
    way (AMQP exchanges and binding keys, NATS or MQTT wildcards...) returns a subclass
    from :meth:`Transport.routing`, so the test broker delivers exactly where the real
    broker would.
    """

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        """Subscriptions with the same key compete for messages; ``None`` makes a private
        group that gets every message."""
        return None if spec.group is None else f"{spec.channel.template}#{spec.group}"

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        """Whether a subscription of ``spec`` receives ``message``."""
        return spec.channel.match(message.channel) is not None


#: Routing by channel name and ``{param}`` patterns, the memory broker's own rules.
DEFAULT_ROUTING = Routing()


class Subscription(abc.ABC):
    """A running consumer inside a transport."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop fetching. Messages delivered and not yet settled are left to the broker,
        which delivers them again (unacknowledged means unprocessed)."""


class Transport(abc.ABC):
    """A connection to one broker, in the broker's own terms."""

    #: The URL schemes this transport serves (``"kafka"``, ``"amqp"``...).
    schemes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_url(cls, url: str) -> Transport:
        """Build the transport for a broker URL of one of its ``schemes``."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise :class:`~fastapi_stream.TransportError` with a clear
        message when the broker cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection. Closing twice is harmless."""

    @abc.abstractmethod
    async def ping(self, timeout: float) -> bool:
        """Whether the broker answers within ``timeout`` seconds. Never raises."""

    @abc.abstractmethod
    async def publish(self, message: OutgoingMessage) -> None:
        """Send ``message``; return once the broker confirmed it where the broker confirms."""

    @abc.abstractmethod
    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        """Publish ``message`` and wait for the reply that carries its correlation id.

        Raise :class:`~fastapi_stream.RequestTimeout` after ``timeout`` seconds, leaving no
        subscription or task behind.
        """

    @abc.abstractmethod
    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        """Start consuming ``spec`` and hand every delivery to ``deliver``."""

    def describe(self) -> str:
        """The broker's address for logs, docs and health output, without credentials."""
        return type(self).__name__

    def routing(self) -> Routing:
        """This broker's routing rules, for the test broker to imitate."""
        return DEFAULT_ROUTING
