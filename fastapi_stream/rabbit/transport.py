"""``amqp://`` and ``amqps://``: RabbitMQ through aio-pika's robust connection.

One robust connection per transport: a channel with publisher confirms for publishing,
one channel per subscription (its QoS is the subscription's prefetch), and a channel that
consumes RabbitMQ's direct reply-to pseudo-queue for requests. After the connection is
lost, aio-pika reopens the channels and restores exchanges, queues, bindings and
consumers; messages that were in flight on the lost channels are requeued by RabbitMQ.
This is the only module that imports aio-pika.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    PublishError,
    RequestTimeout,
    StreamError,
    TransportError,
)
from fastapi_stream.core.message import OutgoingMessage, Settlement, StreamMessage
from fastapi_stream.core.transport import Deliver, Subscription, SubscriptionSpec, Transport
from fastapi_stream.core.url import redact
from fastapi_stream.rabbit.options import (
    DIRECT_REPLY_TO,
    Binding,
    QueueType,
    RabbitExchange,
    RabbitQueue,
    as_exchange,
    binding_for,
)
from fastapi_stream.rabbit.routing import RabbitRouting

__all__ = ["RabbitMessage", "RabbitTransport"]

logger = logging.getLogger("fastapi_stream.rabbit")

#: Bound on the housekeeping calls (basic.cancel, channel close) that must not hang.
_HOUSEKEEPING_TIMEOUT = 3.0


def _text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP header values as text; tables and arrays (``x-death``) stay in ``raw_message``."""
    text: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, str):
            text[key] = value
        elif isinstance(value, bytes):
            text[key] = value.decode("utf-8", "replace")
        elif not isinstance(value, list | tuple | dict):
            text[key] = str(value)
    return text


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RabbitMessage(StreamMessage):
    """A delivery from a RabbitMQ queue; ``raw_message`` is aio-pika's ``IncomingMessage``.

    ``ack`` is basic.ack, ``nack`` basic.nack with requeue (after ``delay`` seconds, during
    which the message stays unacknowledged and the consumer goes on), ``reject`` is
    basic.reject without requeue: the queue's dead-letter exchange gets it, if it has one.
    """

    __slots__ = ("_consumer",)

    def __init__(self, raw: AbstractIncomingMessage, consumer: _Consumer) -> None:
        attempt: int | None = None
        if consumer.counts_deliveries:
            count = (raw.headers or {}).get("x-delivery-count")
            attempt = (count if isinstance(count, int) else 0) + 1
        super().__init__(
            raw.body,
            channel=raw.routing_key or "",
            headers=_text_headers(raw.headers),
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            reply_to=raw.reply_to,
            content_type=raw.content_type,
            delivery_attempt=attempt,
            raw_message=raw,
        )
        self._consumer = consumer

    async def _ack(self) -> None:
        await self._consumer.settle(self, Settlement.ACK)

    async def _nack(self, delay: float) -> None:
        if delay > 0:
            self._consumer.settle_later(self, delay)
        else:
            await self._consumer.settle(self, Settlement.NACK)

    async def _reject(self) -> None:
        await self._consumer.settle(self, Settlement.REJECT)


class _Consumer(Subscription):
    """One subscription: its own channel, and a task that hands deliveries to the core one
    at a time (aio-pika runs consumer callbacks concurrently)."""

    def __init__(
        self, channel: AbstractChannel, queue: AbstractQueue, deliver: Deliver, *, quorum: bool
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.counts_deliveries = quorum
        self.tag: str | None = None
        self._deliver = deliver
        # Bounded by the channel's prefetch: RabbitMQ sends no more than that unacked.
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._stopped = False
        self._closing = False
        self._unsettled = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._timers: set[asyncio.Task[None]] = set()
        self.task = asyncio.create_task(self._run(), name=f"rabbit consumer {queue.name}")

    async def on_message(self, raw: AbstractIncomingMessage) -> None:
        if not self._stopped:
            self._inbox.put_nowait(raw)
        # After stop: left unacknowledged, requeued when this channel closes.

    async def _run(self) -> None:
        while True:
            raw = await self._inbox.get()
            if raw is None or self._stopped:
                break
            try:
                raw.channel  # noqa: B018 - raises once the channel it came on is gone
            except aiormq.exceptions.ChannelInvalidStateError:
                continue  # from before a reconnect: RabbitMQ has requeued it
            self._unsettled += 1
            self._settled.clear()
            try:
                await self._deliver([RabbitMessage(raw, self)])
            except Exception:
                logger.exception("processing a message from queue %r failed", self.queue.name)
        # Stopped. Once the core settled what it got, closing the channel hands the
        # messages prefetched but never delivered back to the queue, in order.
        await self._settled.wait()
        self._closing = True
        await self._close_channel()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._inbox.put_nowait(None)  # wakes the task if it waits for a message
        if self.tag is not None:
            try:
                async with asyncio.timeout(_HOUSEKEEPING_TIMEOUT):
                    await self.queue.cancel(self.tag)
            except Exception as exc:
                logger.debug("basic.cancel on %r failed: %s", self.queue.name, _reason(exc))

    async def settle(self, message: RabbitMessage, how: Settlement) -> None:  # type: ignore[override]  # legacy
        raw: AbstractIncomingMessage = message.raw_message
        try:
            if how is Settlement.ACK:
                await raw.ack()
            elif how is Settlement.NACK:
                await raw.nack(requeue=True)
            else:
                await raw.reject(requeue=False)
        except Exception as exc:
            logger.warning(
                "could not %s message %s from queue %r (%s); RabbitMQ delivers it again",
                how.value,
                message.message_id,
                self.queue.name,
                _reason(exc),
            )
        finally:
            self._unsettled -= 1
            if not self._unsettled:
                self._settled.set()

    def settle_later(self, message: RabbitMessage, delay: float) -> None:
        async def nack_after() -> None:
            await asyncio.sleep(delay)
            await self.settle(message, Settlement.NACK)

        timer = asyncio.create_task(nack_after())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _close_channel(self) -> None:
        try:
            async with asyncio.timeout(_HOUSEKEEPING_TIMEOUT):
                await self.channel.close()
        except Exception as exc:
            logger.debug("closing the channel of %r failed: %s", self.queue.name, _reason(exc))

    def abort(self) -> list[asyncio.Task[None]]:
        """Cancel the task and the delayed nacks (the connection is closing: RabbitMQ
        requeues what they held)."""
        if not self._closing:  # a channel close is bounded: let it finish
            self.task.cancel()
        for timer in self._timers:
            timer.cancel()
        return [self.task, *self._timers]


class RabbitTransport(Transport):
    """RabbitMQ at ``url`` (``amqp://user:password@host:5672/vhost``, or ``amqps://``).

    ``exchange`` is where publishes go and subscribers bind unless they name their own
    exchange; ``None`` is RabbitMQ's default exchange, which routes by queue name. A
    topic exchange here makes channel names behave like topics on other brokers.
    ``queue_arguments`` are given to every queue a subscriber declares by name (say
    ``{"x-queue-type": "quorum"}``). ``connection_name`` is shown by ``rabbitmqctl
    list_connections`` and the management UI.
    """

    schemes = ("amqp", "amqps")

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        exchange: str | RabbitExchange | None = None,
        queue_arguments: Mapping[str, Any] | None = None,
        publish_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        connection_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.exchange = as_exchange(exchange)
        self.queue_arguments = dict(queue_arguments or {})
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        self.connection_name = (
            connection_name or f"fastapi-stream {socket.gethostname()}:{os.getpid()}"
        )
        self.ssl_context = ssl_context
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._declared: set[str] = set()  # exchanges declared on the publishing channel
        self._consumers: list[_Consumer] = []
        self._replies: AbstractChannel | None = None
        self._reply_consumer: object = None  # the underlying channel consuming replies
        self._reply_lock = asyncio.Lock()
        self._waiters: dict[str, asyncio.Future[DeliveredMessage]] = {}

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
                    client_properties={"connection_name": self.connection_name},
                    reconnect_interval=self.reconnect_interval,
                    ssl_context=self.ssl_context,
                )
        except Exception as exc:
            # Not chained: the client's exception may carry the URL with its password.
            raise TransportError(
                f"cannot connect to RabbitMQ at {self.describe()}: {_reason(exc)}"
            ) from None
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._publisher = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                if self.exchange is not None and self.exchange.declare:
                    await self._declare_exchange(self._publisher, self.exchange)
                    self._declared.add(self.exchange.name)
        except Exception as exc:
            await connection.close()
            raise TransportError(
                f"RabbitMQ at {self.describe()} refused the setup: {_reason(exc)}"
            ) from None
        self._connection = connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        consumers, self._consumers = self._consumers, []
        tasks = [task for consumer in consumers for task in consumer.abort()]
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(BrokerNotConnected("the RabbitMQ connection was closed"))
        try:
            async with asyncio.timeout(_HOUSEKEEPING_TIMEOUT):
                await connection.close()
        except Exception as exc:
            logger.debug("closing the connection to %s failed: %s", self.describe(), _reason(exc))
        self._publisher = self._replies = self._reply_consumer = None
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

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        self._connected()
        assert self._publisher is not None
        await self._publish(self._publisher, message, mandatory=True)

    async def _publish(
        self, channel: AbstractChannel, message: OutgoingMessage, *, mandatory: bool
    ) -> None:
        options = message.options
        routing_key = message.channel
        exchange = as_exchange(options.get("exchange", self.exchange))
        mandatory = bool(options.get("mandatory", mandatory))
        if routing_key.startswith(DIRECT_REPLY_TO):
            # A reply: direct reply-to lives on the default exchange, and RabbitMQ
            # returns mandatory publishes to it even when they are delivered.
            exchange, mandatory = None, False
        amqp = aio_pika.Message(
            message.body,
            headers=dict(message.headers) or None,
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if options.get("persist", True)
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            priority=options.get("priority"),
            expiration=options.get("expiration"),
            type=options.get("message_type"),
        )
        timeout = float(options.get("timeout", self.publish_timeout))
        where = f"{routing_key!r} on " + (
            f"exchange {exchange.name!r}" if exchange else "the default exchange"
        )
        try:
            async with asyncio.timeout(timeout):
                if (
                    exchange is not None
                    and exchange.declare
                    and exchange.name not in self._declared
                ):
                    await self._declare_exchange(channel, exchange)
                    self._declared.add(exchange.name)
                underlay = await channel.get_underlay_channel()
                await underlay.basic_publish(
                    amqp.body,
                    exchange=exchange.name if exchange else "",
                    routing_key=routing_key,
                    properties=amqp.properties,
                    mandatory=mandatory,
                )
        except TimeoutError:
            raise PublishError(
                f"RabbitMQ did not confirm the message to {where} within {timeout}s"
            ) from None
        except aiormq.exceptions.PublishError:
            raise PublishError(
                f"no queue is bound for {where}: RabbitMQ returned the message (mandatory "
                "publish; pass mandatory=False to let it drop such messages)"
            ) from None
        except Exception as exc:
            raise PublishError(f"publishing to {where} failed: {_reason(exc)}") from None

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        self._connected()
        correlation_id = message.correlation_id or message.message_id
        if correlation_id in self._waiters:
            raise StreamError(f"a request with correlation id {correlation_id!r} is waiting")
        message.correlation_id = correlation_id
        message.reply_to = DIRECT_REPLY_TO
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[correlation_id] = waiter
        try:
            async with asyncio.timeout(timeout):
                channel = await self._reply_channel()
                # No queue bound is then the same as no responder: a RequestTimeout.
                await self._publish(channel, message, mandatory=False)
                reply = await waiter
        except TimeoutError:
            raise RequestTimeout(f"no reply from {message.channel!r} within {timeout}s") from None
        finally:
            del self._waiters[correlation_id]
        raw = aio_pika.IncomingMessage(reply, no_ack=True)
        return StreamMessage(
            raw.body,
            channel=raw.routing_key or "",
            headers=_text_headers(raw.headers),
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            content_type=raw.content_type,
            raw_message=raw,
        )

    async def _reply_channel(self) -> AbstractChannel:
        """The channel that consumes direct reply-to (again, after a reconnect)."""
        async with self._reply_lock:
            if self._replies is None:
                self._replies = await self._connected().channel(
                    publisher_confirms=True, on_return_raises=True
                )
            underlay = await self._replies.get_underlay_channel()
            if underlay is not self._reply_consumer:
                await underlay.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)
                self._reply_consumer = underlay
            return self._replies

    async def _on_reply(self, reply: DeliveredMessage) -> None:
        correlation_id = reply.header.properties.correlation_id
        waiter = self._waiters.get(correlation_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
        else:
            logger.debug("dropped a reply for %r: nobody waits for it", correlation_id)

    # -- consuming ---------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        connection = self._connected()
        binding = binding_for(spec, self.exchange, self.queue_arguments)
        queue = binding.queue
        channel: AbstractChannel | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if not queue.declare:
                    await self._check_queue_exists(connection, queue)
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=spec.prefetch)
                declared = await self._declare(channel, binding)
                consumer = _Consumer(
                    channel, declared, deliver, quorum=queue.queue_type is QueueType.QUORUM
                )
                consumer.tag = await declared.consume(
                    consumer.on_message, arguments=dict(binding.consume_arguments)
                )
        except (StreamError, asyncio.CancelledError):
            if channel is not None:
                await channel.close()
            raise
        except Exception as exc:
            if channel is not None:
                await channel.close()
            raise TransportError(
                f"cannot consume queue {queue.name!r} for subscriber {spec.channel}: {_reason(exc)}"
            ) from None
        self._consumers.append(consumer)
        return consumer

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
