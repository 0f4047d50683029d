"""``amqp://`` and ``amqps://``: RabbitMQ through aio-pika's robust connection.

One robust connection per transport: a channel with publisher confirms for publishing,
one channel per subscription (its QoS is the subscription's prefetch, see
``consume.py``), and a channel that consumes RabbitMQ's direct reply-to
pseudo-queue for requests. After the connection is lost, aio-pika reopens the channels
and restores exchanges, queues, bindings and consumers; messages that were in flight on
the lost channels are requeued by RabbitMQ. A watchdog notices a connection that went
silent without closing (``watchdog.py``). Only this package imports aio-pika.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from typing import NamedTuple, Unpack

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.message import encode_expiration
from aiormq.abc import DeliveredMessage

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    PublishError,
    StreamError,
    TransportError,
    client_error,
    reason,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.options import check_options
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import Deliver, Subscription, SubscriptionSpec, Transport
from fastapi_stream.core.url import redact
from fastapi_stream.rabbit.consume import (
    HOUSEKEEPING_TIMEOUT,
    RabbitMessage,
    RabbitSubscription,
    text_headers,
)
from fastapi_stream.rabbit.options import (
    DIRECT_REPLY_TO,
    Binding,
    PublishOptions,
    QueueType,
    RabbitExchange,
    RabbitOptions,
    RabbitQueue,
    as_exchange,
    binding_for,
)
from fastapi_stream.rabbit.routing import RabbitRouting
from fastapi_stream.rabbit.watchdog import Watchdog, heartbeat_of

__all__ = ["RabbitMessage", "RabbitTransport"]

logger = logging.getLogger("fastapi_stream.rabbit")


class _Outgoing(NamedTuple):
    """One ``basic.publish``, ready to send."""

    body: bytes
    exchange: RabbitExchange | None
    routing_key: str
    properties: aiormq.spec.Basic.Properties
    mandatory: bool
    timeout: float

    def where(self) -> str:
        exchange = self.exchange
        target = f"exchange {exchange.name!r}" if exchange else "the default exchange"
        return f"{self.routing_key!r} on {target}"


def _client_error(
    exc: BaseException, doing: str, *, publishing: bool = False, timeout: float | None = None
) -> StreamError:
    """The client's exceptions as ours; raise the result ``from None``: a client exception
    may carry the URL with its password."""
    if not publishing:
        if isinstance(exc, StreamError):
            return exc
        if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
            # Declared before with other arguments: retrying cannot help.
            return ConfigurationError(
                f"{doing}: {reason(exc)} (declare it as it is, or delete it first)"
            )
        return TransportError(f"{doing}: {reason(exc)}")
    if isinstance(exc, aiormq.exceptions.PublishError):
        return PublishError(
            f"no queue is bound for {doing}: RabbitMQ returned the message (mandatory "
            "publish; pass mandatory=False to let it drop such messages)"
        )
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return PublishError(f"RabbitMQ refused the message to {doing} (basic.nack)")
    return client_error(exc, f"the publish to {doing}", broker="RabbitMQ", timeout=timeout)


class RabbitTransport(Transport):
    """RabbitMQ at ``url`` (``amqp://user:password@host:5672/vhost``, or ``amqps://``),
    with :class:`~fastapi_stream.rabbit.RabbitOptions`."""

    schemes = ("amqp", "amqps")
    publish_options = PublishOptions.__optional_keys__

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        **options: Unpack[RabbitOptions],
    ) -> None:
        check_options(type(self).__name__, options, RabbitOptions.__optional_keys__)
        self.url = url
        self.heartbeat = heartbeat_of(url)
        self.exchange = as_exchange(options.get("exchange"))
        self.queue_arguments = dict(options.get("queue_arguments") or {})
        self.publish_timeout = options.get("publish_timeout", 10.0)
        self.connect_timeout = options.get("connect_timeout", 10.0)
        self.reconnect_interval = options.get("reconnect_interval", 1.0)
        self.connection_name = (
            options.get("connection_name") or f"fastapi-stream {socket.gethostname()}:{os.getpid()}"
        )
        self.ssl_context = options.get("ssl_context")
        self._connection: AbstractRobustConnection | None = None
        self._watchdog: Watchdog | None = None
        self._publisher: AbstractChannel | None = None
        self._declared: set[str] = set()  # exchanges declared on the publishing channel
        self._reply_channel: AbstractChannel | None = None
        self._reply_consumer: object = None  # the AMQP channel consuming replies
        self._reply_lock = asyncio.Lock()
        self._replies: Replies[DeliveredMessage] = Replies()

    @classmethod
    def from_url(cls, url: str) -> RabbitTransport:
        return cls(url)

    def describe(self) -> str:
        return redact(self.url)

    def routing(self) -> RabbitRouting:
        return RabbitRouting(self.exchange, self.queue_arguments)

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> None:
        if self._connection is not None:
            return
        self._reply_lock = asyncio.Lock()  # asyncio primitives belong to one event loop
        try:
            async with asyncio.timeout(self.connect_timeout):
                connection = await aio_pika.connect_robust(
                    self.url,
                    heartbeat=self.heartbeat,
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=self.reconnect_interval,
                    ssl_context=self.ssl_context,
                    # Also bounds each reconnect: without it, an attempt whose handshake
                    # is never answered would hold up every later one.
                    timeout=self.connect_timeout,
                )
        except Exception as exc:
            raise _client_error(exc, f"cannot connect to RabbitMQ at {self.describe()}") from None
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._publisher = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                if self.exchange is not None:
                    await self._ensure_exchange(self._publisher, self.exchange)
        except Exception as exc:
            await connection.close()
            raise _client_error(exc, f"RabbitMQ at {self.describe()} refused the setup") from None
        self._connection = connection
        if self.heartbeat > 0:
            self._watchdog = Watchdog(connection, self.heartbeat, self.describe())

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._watchdog is not None:
            await self._watchdog.stop()
            self._watchdog = None
        self._replies.fail_all(BrokerNotConnected("the RabbitMQ connection was closed"))
        try:
            async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                await connection.close()
        except Exception as exc:
            logger.debug("closing the connection to %s failed: %s", self.describe(), reason(exc))
        self._publisher = self._reply_channel = self._reply_consumer = None
        self._declared.clear()

    async def ping(self, timeout: float) -> bool:
        channel = self._publisher
        if self._connection is None or self._connection.is_closed or channel is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                underlay = await channel.get_underlay_channel()
                await underlay.exchange_declare("amq.direct", passive=True)
        except Exception:
            return False
        return True

    def _connected(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        return self._connection

    async def _declare_exchange(
        self, channel: AbstractChannel, exchange: RabbitExchange
    ) -> AbstractExchange:
        if not exchange.declare:
            return await channel.get_exchange(exchange.name, ensure=False)
        declared = await channel.declare_exchange(
            exchange.name,
            type=exchange.type.value,
            durable=exchange.durable,
            auto_delete=exchange.auto_delete,
            arguments=dict(exchange.arguments or {}),
        )
        if exchange.bind_to is not None:
            upstream = await self._declare_exchange(channel, exchange.bind_to)
            await declared.bind(
                upstream,
                routing_key=exchange.routing_key,
                arguments=dict(exchange.bind_arguments or {}),
            )
        return declared

    async def _ensure_exchange(self, channel: AbstractChannel, exchange: RabbitExchange) -> None:
        """Declare ``exchange`` once per connection before publishing to it."""
        if exchange.declare and exchange.name not in self._declared:
            await self._declare_exchange(channel, exchange)
            self._declared.add(exchange.name)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        self._connected()
        assert self._publisher is not None
        await self._send(self._publisher, [self._outgoing(message, mandatory=True)])

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Every ``basic.publish`` first, then the confirms together: one wait for the
        batch, not one per message."""
        self._connected()
        assert self._publisher is not None
        await self._send(self._publisher, [self._outgoing(m, mandatory=True) for m in messages])

    def _outgoing(self, message: OutgoingMessage, *, mandatory: bool) -> _Outgoing:
        options = message.options
        routing_key = message.channel
        exchange = as_exchange(options.get("exchange", self.exchange))
        mandatory = bool(options.get("mandatory", mandatory))
        if routing_key.startswith(DIRECT_REPLY_TO):
            # A reply: direct reply-to lives on the default exchange, and RabbitMQ
            # returns mandatory publishes to it even when they are delivered.
            exchange, mandatory = None, False
        properties = aiormq.spec.Basic.Properties(
            headers=dict(message.headers),
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            delivery_mode=2 if options.get("persist", True) else 1,
            priority=int(options.get("priority") or 0),
            expiration=encode_expiration(options.get("expiration")),
            message_type=options.get("message_type"),
        )
        timeout = float(options.get("timeout", self.publish_timeout))
        return _Outgoing(message.body, exchange, routing_key, properties, mandatory, timeout)

    async def _send(self, channel: AbstractChannel, batch: Sequence[_Outgoing]) -> None:
        if not batch:
            return
        timeout = max(out.timeout for out in batch)
        results: Sequence[object] = ()
        current = batch[0]
        try:
            async with asyncio.timeout(timeout):
                for current in batch:
                    if current.exchange is not None:
                        await self._ensure_exchange(channel, current.exchange)
                underlay = await channel.get_underlay_channel()
                if len(batch) == 1:
                    await _basic_publish(underlay, batch[0])
                    return
                results = await asyncio.gather(
                    *(_basic_publish(underlay, out) for out in batch), return_exceptions=True
                )
        except Exception as exc:
            where = current.where()
            if len(batch) > 1:
                where += f" and {len(batch) - 1} other message(s)"
            raise _client_error(exc, where, publishing=True, timeout=timeout) from None
        failed = [
            (out, result)
            for out, result in zip(batch, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            first, error = failed[0]
            why = _client_error(error, first.where(), publishing=True, timeout=timeout)
            raise PublishError(f"{len(failed)} of {len(batch)} messages not sent: {why}")

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        self._connected()

        async def send(request: OutgoingMessage) -> None:
            channel = await self._reply_consuming()
            # No queue bound is then the same as no responder: a RequestTimeout.
            await self._send(channel, [self._outgoing(request, mandatory=False)])

        reply = await self._replies.request(message, DIRECT_REPLY_TO, timeout, send)
        raw = aio_pika.IncomingMessage(reply, no_ack=True)
        return StreamMessage(
            raw.body,
            channel=raw.routing_key or "",
            headers=text_headers(raw.headers),
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            content_type=raw.content_type,
            raw_message=raw,
        )

    async def _reply_consuming(self) -> AbstractChannel:
        """The channel that consumes direct reply-to (again, after a reconnect)."""
        async with self._reply_lock:
            if self._reply_channel is None:
                self._reply_channel = await self._connected().channel(
                    publisher_confirms=True, on_return_raises=True
                )
            underlay = await self._reply_channel.get_underlay_channel()
            if underlay is not self._reply_consumer:
                await underlay.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
                self._reply_consumer = underlay
            return self._reply_channel

    async def _on_reply(self, reply: DeliveredMessage) -> None:
        correlation_id = reply.header.properties.correlation_id
        if not self._replies.resolve(correlation_id, reply):
            logger.debug("dropped a reply for %r: nobody waits for it", correlation_id)

    # -- consuming ---------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        connection = self._connected()
        binding = binding_for(spec, self.exchange, self.queue_arguments)
        queue = binding.queue
        channel: AbstractRobustChannel | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if not queue.declare:
                    await self._check_queue_exists(connection, queue)
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=spec.prefetch)
                declared = await self._declare(channel, binding)
                subscription = RabbitSubscription(
                    channel,
                    declared,
                    quorum=queue.queue_type is QueueType.QUORUM,
                    arguments=binding.consume_arguments,
                )
                await subscription.consume()
        except (StreamError, asyncio.CancelledError):
            if channel is not None:
                await channel.close()
            raise
        except Exception as exc:
            if channel is not None:
                await channel.close()
            doing = f"cannot consume queue {queue.name!r} for subscriber {spec.channel}"
            raise _client_error(exc, doing) from None
        return subscription

    async def _declare(self, channel: AbstractChannel, binding: Binding) -> AbstractQueue:
        queue = binding.queue
        declared = await channel.declare_queue(
            queue.name or None,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.auto_delete,
            arguments=queue.declare_arguments(),
            passive=not queue.declare,
        )
        if binding.exchange is not None:
            exchange = await self._declare_exchange(channel, binding.exchange)
            await declared.bind(
                exchange,
                routing_key=binding.routing_key,
                arguments=dict(binding.bind_arguments or {}),
            )
        return declared

    async def _check_queue_exists(
        self, connection: AbstractRobustConnection, queue: RabbitQueue
    ) -> None:
        """``declare=False``: fail clearly at startup if the queue is not there. Checked
        on a throwaway channel, since RabbitMQ closes the channel of a failed check."""
        probe = await connection.channel(publisher_confirms=False)
        try:
            await probe.declare_queue(queue.name, passive=True, robust=False)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise ConfigurationError(
                f"queue {queue.name!r} does not exist on {self.describe()}; declare=False "
                "consumes an existing queue: create it, or let the subscriber declare it"
            ) from None
        finally:
            if not probe.is_closed:
                await probe.close()


async def _basic_publish(channel: aiormq.abc.AbstractChannel, out: _Outgoing) -> object:
    assert isinstance(channel, aiormq.Channel)
    return await channel.basic_publish(
        out.body,
        exchange=out.exchange.name if out.exchange else "",
        routing_key=out.routing_key,
        properties=out.properties,
        mandatory=out.mandatory,
        wait=False,  # the confirm is what counts: do not hold the channel until written
    )
