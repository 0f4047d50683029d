"""The seam between the broker-agnostic core and one broker's client library.

A transport says what only its broker can do: connect, publish one message or many,
answer requests, and per subscriber a :class:`Subscription` that fetches messages,
settles them in bulk, redelivers the ones the core nacked and hands back what is
unsettled at stop. The core owns everything that is the same for every broker: the
consume loop and its stop rule, concurrency, the reconnect backoff, delayed redelivery,
result batching, decoding, validation, dependency injection, middlewares and the ack
policy (see ``core/consume.py`` and ``docs/transports.md``).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.message import OutgoingMessage, StreamMessage

__all__ = ["DEFAULT_ROUTING", "Deliver", "Routing", "Subscription", "SubscriptionSpec", "Transport"]

#: The core's entry point for messages a transport hands over at once instead of being
#: fetched: only a broker inside the process that must deliver synchronously (the test
#: broker's inline engine) calls it. It returns once the messages are handled and settled.
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


class Subscription:
    """One subscriber's consumer inside a transport, driven by the core's consume loop.

    The loop calls :meth:`fetch` again and again (never two at once), hands what it got to
    the handlers, and settles the results through :meth:`settle` and :meth:`redeliver`,
    which may run while a fetch is waiting. A fetch that raises is retried after the
    router's reconnect backoff: a subscription re-establishes whatever it needs (a
    subscription, a consumer group) in its next ``fetch``. At stop the loop cancels a
    waiting fetch (never a delivery), lets the handlers finish, settles, and calls
    :meth:`close`.
    """

    #: Seconds between :meth:`keepalive` calls, ``None`` for none.
    keepalive_interval: float | None = None

    #: The broker keeps an order the core must not break (a Kafka partition): a message
    #: nacked in a delivery handled inline holds back the ones after it, which the core
    #: hands back unhandled (``redeliver``), behind it.
    ordered: ClassVar[bool] = False

    #: The broker takes one message's settlement as cheaply as many (Kafka marks an
    #: offset finished in memory): the core settles each message of a delivery handled
    #: inline as it finishes, unless a result of the delivery waits to be published first,
    #: instead of all at the delivery's end. A consumer killed mid-delivery then hands
    #: back the messages since its last commit, not the whole delivery.
    settle_each: ClassVar[bool] = False

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        """Wait for the next messages and return at most ``limit`` of them. Return ``[]``
        now and then (a second or so) when nothing arrives; raise when the broker fails."""
        raise NotImplementedError

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        """Tell the broker that ``acked`` are processed and ``rejected`` are never to be
        (dropped, or dead-lettered by the broker itself). One round trip where the broker
        allows. Raising leaves the messages unsettled: the broker delivers them again."""
        return None

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        """Hand ``messages`` back for another delivery, now (the core waited out any
        delay). A broker that cannot redeliver (pub/sub) does nothing. Raising keeps them
        in the core, which tries again after the broker is back."""
        return None

    async def keepalive(self) -> None:
        """Called every ``keepalive_interval`` seconds while the subscription runs, for a
        broker that must hear from a live consumer (Redis streams keep its unsettled
        entries fresh, so no other consumer claims them). Raising is logged and retried
        with the backoff."""
        return None

    async def close(self) -> None:
        """Give up consuming: hand back to the broker every message fetched and not
        settled (in order where the broker keeps one) and release what the subscription
        holds. Called once, after the handlers are done; never raises."""
        return None


class Transport(abc.ABC):
    """A connection to one broker, in the broker's own terms."""

    #: The URL schemes this transport serves (``"kafka"``, ``"amqp"``...).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: The broker options a publish may carry (a Kafka ``key``, an AMQP ``priority``...):
    #: the keys of the broker's ``...PublishOptions``. The core refuses others before
    #: anything is sent, and a publisher declared with others at startup. ``None``: any.
    publish_options: AbstractSet[str] | None = None

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

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send ``messages`` (the results of one delivery) and return once the broker
        confirmed them all; raise :class:`~fastapi_stream.PublishError` if any failed.
        Brokers that pipeline or confirm asynchronously override this to send them
        together."""
        for message in messages:
            await self.publish(message)

    @abc.abstractmethod
    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        """Set up consuming ``spec`` and return its :class:`Subscription`, ready to fetch.
        Raise :class:`~fastapi_stream.TransportError` (or a ``ConfigurationError`` that
        says what to fix) when it cannot be set up."""

    def describe(self) -> str:
        """The broker's address for logs, docs and health output, without credentials."""
        return type(self).__name__

    def routing(self) -> Routing:
        """This broker's routing rules, for the test broker to imitate."""
        return DEFAULT_ROUTING
