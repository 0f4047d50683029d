"""RabbitMQ's own vocabulary: queues, exchanges, and how a subscriber binds to them.

Plain data, no client library: the transport declares what these describe, and the test
broker's :class:`~fastapi_stream.rabbit.routing.RabbitRouting` routes by the same rules.
The names are FastStream's (``RabbitQueue``, ``RabbitExchange``, ``ExchangeType``...).
"""

from __future__ import annotations

import enum
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.transport import SubscriptionSpec

_log = logging.getLogger("fastapi_stream.rabbit")

__all__ = [
    "DIRECT_REPLY_TO",
    "Binding",
    "ExchangeType",
    "PublishOptions",
    "QueueType",
    "RabbitExchange",
    "RabbitOptions",
    "RabbitQueue",
    "as_exchange",
    "binding_for",
]

#: RabbitMQ's pseudo-queue for direct reply-to: requests need no reply queue.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
_PARAM = re.compile(r"{(\w+)}")


class ExchangeType(enum.StrEnum):
    """How an exchange picks the queues a message goes to."""

    DIRECT = "direct"  #: binding key equals the routing key
    FANOUT = "fanout"  #: every bound queue
    TOPIC = "topic"  #: binding key pattern: ``*`` one word, ``#`` zero or more words
    HEADERS = "headers"  #: bind arguments against message headers (``x-match`` all/any)


class QueueType(enum.StrEnum):
    """RabbitMQ's queue types (``x-queue-type``)."""

    CLASSIC = "classic"
    QUORUM = "quorum"  #: replicated; counts deliveries (``x-delivery-count``)
    STREAM = "stream"  #: an append-only log, read from an offset


@dataclass(frozen=True, slots=True)
class RabbitExchange:
    """An exchange, declared when a subscriber or publisher first uses it.

    ``bind_to`` binds this exchange to another one (exchange-to-exchange binding) with
    ``routing_key`` and ``bind_arguments``. ``declare=False`` uses an exchange that exists.
    """

    name: str
    type: ExchangeType = ExchangeType.DIRECT
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None
    declare: bool = True
    bind_to: RabbitExchange | None = None
    routing_key: str = ""
    bind_arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RabbitQueue:
    """A queue, declared (and bound) when its subscriber starts.

    Durable by default. ``routing_key`` is the binding key to the subscriber's exchange
    (the channel by default; ``{param}`` parts bind as ``*`` and reach the handler as path
    parameters); ``bind_arguments`` match headers on a headers exchange. ``declare=False``
    uses a queue that exists: startup fails clearly if it does not.
    """

    name: str
    queue_type: QueueType = QueueType.CLASSIC
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None
    routing_key: str | None = None
    bind_arguments: Mapping[str, Any] | None = None
    declare: bool = True

    def declare_arguments(self) -> dict[str, Any]:
        """The ``arguments`` of ``queue.declare``, with the queue type."""
        arguments = dict(self.arguments or {})
        if self.queue_type is not QueueType.CLASSIC:
            arguments["x-queue-type"] = self.queue_type.value
        return arguments


class RabbitOptions(TypedDict, total=False):
    """The connection's options: keyword arguments of ``RabbitTransport`` and
    ``RabbitRouter`` [default]."""

    #: Where publishes go and subscribers bind unless they name their own exchange (a
    #: topic exchange makes channels topics) [None: the default exchange, by queue name]
    exchange: str | RabbitExchange | None
    #: For every queue a subscriber declares by name: ``{"x-queue-type": "quorum"}`` [None]
    queue_arguments: Mapping[str, Any] | None
    publish_timeout: float  #: seconds a publish waits for its confirm [10]
    connect_timeout: float  #: [10]
    reconnect_interval: float  #: seconds between reconnect attempts [1]
    #: Shown by ``rabbitmqctl list_connections`` ["fastapi-stream {host}:{pid}"]
    connection_name: str | None
    ssl_context: ssl.SSLContext | None  #: for ``amqps://`` [aio-pika's default]


class PublishOptions(TypedDict, total=False):
    """Publish options of ``broker.publish(msg, routing_key, **options)`` on RabbitMQ."""

    #: Where to publish: a name or a :class:`RabbitExchange` (declared on first use).
    #: Default: the router's exchange, else RabbitMQ's default exchange (by queue name).
    exchange: str | RabbitExchange
    #: Raise :class:`~fastapi_stream.PublishError` when no queue gets the message
    #: (default ``True``; ``False`` for requests, so "nobody answers" is a timeout).
    mandatory: bool
    #: Store the message on disk (delivery mode 2). Default ``True``.
    persist: bool
    priority: int
    #: Seconds the message may wait in a queue.
    expiration: float
    message_type: str
    #: Seconds to wait for the publisher confirm; the transport's ``publish_timeout``
    #: by default.
    timeout: float


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a subscription consumes from: a queue, and how it is bound.

    ``exchange`` ``None`` is RabbitMQ's default exchange, which routes by queue name.
    """

    queue: RabbitQueue
    exchange: RabbitExchange | None
    routing_key: str
    bind_arguments: Mapping[str, Any] | None = None
    consume_arguments: Mapping[str, Any] = field(default_factory=dict)


def as_exchange(value: object) -> RabbitExchange | None:
    """A subscriber's or publisher's ``exchange=`` as an exchange (``None``: the default)."""
    if value is None or value == "":
        return None
    if isinstance(value, RabbitExchange):
        return value if value.name else None
    if isinstance(value, str):
        return RabbitExchange(value, declare=False)
    raise ConfigurationError(f"exchange must be a name or a RabbitExchange, not {value!r}")


def binding_for(
    spec: SubscriptionSpec,
    default_exchange: RabbitExchange | None = None,
    queue_arguments: Mapping[str, Any] | None = None,
) -> Binding:
    """The queue and binding of a subscription, from its channel, group and options.

    The queue is named after the channel (or ``queue=``); subscribers of one queue
    compete. ``group=`` gives a queue ``"<channel>.<group>"`` of its own, bound to the
    exchange, so every group gets every message.
    """
    options = spec.options
    channel = spec.channel
    exchange = as_exchange(options.get("exchange", default_exchange))
    queue = options.get("queue")
    where = f"subscriber {channel.template!r}"
    if isinstance(queue, RabbitQueue):
        if spec.group is not None:
            raise ConfigurationError(f"{where}: give either queue= or group=, not both")
    else:
        # A pattern's queue: "orders.{region}" -> "orders.:region" (AMQP allows no braces).
        name = queue if isinstance(queue, str) else _PARAM.sub(r":\1", channel.template)
        if spec.group is not None:
            if queue is not None:
                raise ConfigurationError(f"{where}: give either queue= or group=, not both")
            if exchange is not None:
                name = f"{name}.{spec.group}"
            else:
                # On the default exchange a message reaches the one queue of its name:
                # a group there means what the queue already is, competing consumers.
                _log.warning(
                    "%s: on RabbitMQ's default exchange group=%r means the consumers of "
                    "queue %r compete; for groups that each get every message, give the "
                    "router an exchange",
                    where,
                    spec.group,
                    name,
                )
        queue = RabbitQueue(
            name,
            arguments=queue_arguments,
            declare=bool(options.get("declare", True)),
        )
    key = options.get("routing_key") or queue.routing_key or channel.template
    routing_key = ChannelPattern.parse(key).with_wildcards("*") if "{" in key else key
    if exchange is None and routing_key != queue.name:
        raise ConfigurationError(
            f"{where}: RabbitMQ's default exchange routes by queue name only; a channel "
            "pattern, a routing_key or a group needs an exchange, e.g. "
            "exchange=RabbitExchange('events', type=ExchangeType.TOPIC)"
        )
    return Binding(
        queue=queue,
        exchange=exchange,
        routing_key=routing_key,
        bind_arguments=options.get("bind_arguments") or queue.bind_arguments,
        consume_arguments=options.get("consume_arguments") or {},
    )
