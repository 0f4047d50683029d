"""Consuming one RabbitMQ queue: what the core's consume loop needs from AMQP.

The subscription consumes on the AMQP channel under its robust aio-pika channel and puts
each delivery into a buffer, which the channel's QoS (the subscriber's prefetch) bounds;
:meth:`RabbitSubscription.fetch` drains it. The settlements of a delivery go out without
waiting for the wire: one ``basic.ack`` with ``multiple=True`` covers every acked
delivery below the lowest one still unsettled on the channel, the rest are acked one by
one; ``basic.reject`` without requeue, and ``basic.nack`` with requeue for what the core
redelivers (the core already waited any delay).

After a reconnect, aio-pika reopens the channel and restores its QoS, queues and
bindings; ``fetch`` then consumes again. aio-pika retries the connection by itself, so a
fetch waits for the channel to come back (up to ``OUTAGE_WAIT``) rather than raising at
once: with the core's backoff as a second retry in series, consuming resumed only at the
core's next attempt, up to its backoff cap after the channel was back. RabbitMQ has
requeued what the lost channel held: deliveries from it are dropped, never settled on the
new channel (delivery tags belong to one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import aiormq
from aio_pika import IncomingMessage
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel
from aiormq.abc import DeliveredMessage

from fastapi_stream.core.errors import TransportError, reason
from fastapi_stream.core.message import StreamMessage
from fastapi_stream.core.transport import Subscription

__all__ = ["RabbitMessage", "RabbitSubscription", "text_headers"]

logger = logging.getLogger("fastapi_stream.rabbit")

#: Bound on the housekeeping calls (basic.cancel, channel close) that must not hang.
HOUSEKEEPING_TIMEOUT = 3.0
#: An idle fetch returns ``[]`` after this many seconds.
IDLE_FETCH = 1.0
#: A fetch waits this long for aio-pika to bring a lost channel back before it raises
#: (the core logs the outage and backs off); below the core's fetch timeout (30 s).
OUTAGE_WAIT = 10.0


def text_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
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


class RabbitMessage(StreamMessage):
    """A delivery from a RabbitMQ queue. ``raw_message`` is aio-pika's ``IncomingMessage``
    (built when first read) with every AMQP property: ``delivery_tag``, ``redelivered``,
    header tables such as ``x-death``.

    The core settles it through the subscription: ``ack`` is basic.ack, ``nack`` is
    basic.nack with requeue (after ``delay`` seconds, during which the message stays
    unacknowledged and the consumer goes on), ``reject`` is basic.reject without requeue:
    the queue's dead-letter exchange gets it, if it has one.
    """

    __slots__ = ("_incoming", "delivered")
    _incoming: AbstractIncomingMessage | None

    def __init__(self, delivered: DeliveredMessage, *, counts_deliveries: bool) -> None:
        properties = delivered.header.properties
        headers = properties.headers
        attempt: int | None = None
        if counts_deliveries:  # quorum queues: the broker's own count, across consumers
            count = (headers or {}).get("x-delivery-count")
            attempt = (count if isinstance(count, int) else 0) + 1
        super().__init__(
            delivered.body,
            channel=delivered.delivery.routing_key or "",  # type: ignore[union-attr]
            headers=text_headers(headers) if headers else {},
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            reply_to=properties.reply_to,
            content_type=properties.content_type,
            delivery_attempt=attempt,
        )
        #: The AMQP delivery as aiormq read it (``channel``, ``delivery.delivery_tag``).
        self.delivered = delivered

    @property
    def raw_message(self) -> AbstractIncomingMessage:
        if self._incoming is None:
            self._incoming = IncomingMessage(self.delivered, no_ack=False)
        return self._incoming

    @raw_message.setter
    def raw_message(self, value: AbstractIncomingMessage | None) -> None:
        self._incoming = value


class RabbitSubscription(Subscription):
    """One subscriber's consumer: its own channel (whose QoS is the prefetch), a buffer
    of deliveries, and the delivery tags not yet settled."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        queue: AbstractQueue,
        *,
        quorum: bool,
        arguments: Mapping[str, Any],
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.counts_deliveries = quorum
        self.arguments = dict(arguments)
        self.tag: str | None = None  # the consumer tag on the current AMQP channel
        self._buffer: deque[DeliveredMessage] = deque()
        self._arrived = asyncio.Event()
        # The AMQP channel consumed on, and its unsettled delivery tags (buffered, being
        # handled, or held by the core for a delayed redelivery).
        self._amqp: aiormq.Channel | None = None
        self._unsettled: set[int] = set()
        self._closed = False

    async def consume(self) -> None:
        """basic.consume on the current AMQP channel, unless consuming there already."""
        current = self._amqp
        if current is not None and not current.is_closed and self.tag in current.consumers:
            return
        await self.channel.ready()  # reopened, with its QoS, queues and bindings
        amqp = await self.channel.get_underlay_channel()
        assert isinstance(amqp, aiormq.Channel)
        self._amqp, self._unsettled = amqp, set()
        self._buffer.clear()  # from the lost channel: RabbitMQ requeued them
        ok = await amqp.basic_consume(self.queue.name, self._on_delivery, arguments=self.arguments)
        self.tag = ok.consumer_tag

    async def _on_delivery(self, delivered: DeliveredMessage) -> None:
        if self._closed or delivered.channel is not self._amqp:
            return  # left unacknowledged: requeued when that channel closes
        self._unsettled.add(_tag(delivered))
        self._buffer.append(delivered)
        self._arrived.set()

    # -- the core's side ---------------------------------------------------------------

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        buffer = self._buffer
        if not buffer:
            amqp = self._amqp
            lost = amqp is None or amqp.is_closed
            try:
                async with asyncio.timeout(OUTAGE_WAIT if lost else IDLE_FETCH):
                    await self.consume()  # again, after a reconnect
            except TimeoutError:
                raise TransportError(
                    f"the channel consuming queue {self.queue.name!r} is not back yet"
                ) from None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_FETCH):
                    while not buffer:
                        self._arrived.clear()
                        await self._arrived.wait()
            if not buffer:
                return []
        amqp, quorum = self._amqp, self.counts_deliveries
        fetched: list[StreamMessage] = []
        while buffer and len(fetched) < limit:
            delivered = buffer.popleft()
            if delivered.channel is amqp:
                fetched.append(RabbitMessage(delivered, counts_deliveries=quorum))
        return fetched

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        amqp, unsettled = self._amqp, self._unsettled
        lost = 0
        tags: list[int] = []
        for message in rejected:
            tag = self._take(message)
            if tag is None:
                lost += 1
            else:
                await amqp.basic_reject(tag, requeue=False, wait=False)  # type: ignore[union-attr]
        for message in acked:
            tag = self._take(message)
            if tag is None:
                lost += 1
            else:
                tags.append(tag)
        if tags:
            assert amqp is not None
            tags.sort()
            # One ack for every tag below the lowest still unsettled (multiple=True
            # covers them all), one each for those above it.
            lowest = min(unsettled) if unsettled else tags[-1] + 1
            covered = next((i for i, tag in enumerate(tags) if tag > lowest), len(tags))
            if covered:
                await amqp.basic_ack(tags[covered - 1], multiple=covered > 1, wait=False)
            for tag in tags[covered:]:
                await amqp.basic_ack(tag, wait=False)
        if lost:
            raise TransportError(
                f"{lost} message(s) from queue {self.queue.name!r} came on a channel that "
                "was lost: RabbitMQ delivers them again"
            )

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        amqp = self._amqp
        for message in messages:
            tag = self._take(message)
            if tag is not None:  # else its channel is gone and RabbitMQ requeued it
                await amqp.basic_nack(tag, requeue=True, wait=False)  # type: ignore[union-attr]

    async def close(self) -> None:
        """basic.cancel, then close the channel: RabbitMQ requeues, in order, what was
        prefetched and not settled."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        name = self.queue.name
        for what, step in (("basic.cancel", self._cancel), ("closing the channel", self._close)):
            try:
                async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
                    await step()
            except Exception as exc:
                logger.debug("%s of queue %r failed: %s", what, name, reason(exc))

    async def _cancel(self) -> None:
        amqp = self._amqp
        if amqp is not None and not amqp.is_closed and self.tag is not None:
            await amqp.basic_cancel(self.tag)

    async def _close(self) -> None:
        await self.channel.close()

    def _take(self, message: StreamMessage) -> int | None:
        """The delivery tag of ``message``, now settled; ``None`` when the channel it came
        on is gone (RabbitMQ requeued it)."""
        delivered: DeliveredMessage = message.delivered  # type: ignore[attr-defined]
        tag = _tag(delivered)
        if delivered.channel is not self._amqp or tag not in self._unsettled:
            return None
        self._unsettled.discard(tag)
        return tag


def _tag(delivered: DeliveredMessage) -> int:
    return delivered.delivery.delivery_tag  # type: ignore[union-attr, return-value]
