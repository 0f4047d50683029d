"""Messages as the pipeline sees them: :class:`StreamMessage` in, :class:`OutgoingMessage` out.

A transport builds one ``StreamMessage`` per delivery (subclassing it only to expose a
broker's own metadata, such as a Kafka offset); settling goes to the core, which hands
the settlements of a whole delivery to the transport's subscription together. The rest
of the pipeline never looks at broker-specific types.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from fastapi_stream.core import codec

__all__ = ["OutgoingMessage", "Settlement", "Settler", "StreamMessage", "new_message_id"]


def new_message_id() -> str:
    """A random 128-bit id in hex, the default ``message_id`` of a publish."""
    return os.urandom(16).hex()


class Settlement(enum.Enum):
    """How a message was settled with its broker."""

    ACK = "ack"  #: processed; the broker forgets it
    NACK = "nack"  #: not processed; the broker delivers it again
    REJECT = "reject"  #: never to be processed; dropped or dead-lettered by the broker


class Settler(Protocol):
    """The delivery a message came in, as the core's consume loop keeps it: it collects
    the settlements of its messages and the results their handlers publish, and hands
    them to the transport in bulk at its end."""

    def settled(self, message: StreamMessage, delay: float) -> Awaitable[None] | None:
        """``message`` was just settled (``message.settlement``); ``delay`` is the wait
        before redelivery asked for by a nack. Returns what to await when the settlement
        goes to the broker at once (an ack before the handler, ``ACK_FIRST``)."""

    def keep_result(self, owner: object, item: Any) -> bool:
        """Keep ``item``, a handler's result published through the broker ``owner``, to
        send with the delivery's others; ``False`` when ``owner`` is another broker."""


class StreamMessage:
    """One delivery of a message: the raw body, its metadata and how to settle it.

    Declare a handler parameter as ``msg: StreamMessage`` to receive it. The first
    settlement wins: ``ack()``, ``nack()`` and ``reject()`` after it do nothing, so a
    handler that settles by hand is never overruled by the subscriber's ack policy.
    """

    __slots__ = (
        "_settlement",
        "_settler",
        "body",
        "channel",
        "content_type",
        "correlation_id",
        "delivery_attempt",
        "headers",
        "message_id",
        "path",
        "raw_message",
        "reply_to",
    )

    def __init__(
        self,
        body: bytes,
        *,
        channel: str,
        headers: Mapping[str, str] | None = None,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        content_type: str | None = None,
        delivery_attempt: int | None = None,
        raw_message: Any = None,
    ) -> None:
        self.body = body
        self.channel = channel
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.content_type = content_type
        #: 1 on the first delivery, when the broker counts deliveries; else ``None``.
        self.delivery_attempt = delivery_attempt
        #: Values of the parameters in the subscriber's channel pattern (``"orders.{region}"``).
        self.path: dict[str, str] = {}
        #: The broker client's own message object, for what the common API does not cover.
        self.raw_message = raw_message
        self._settlement: Settlement | None = None
        #: Set by the core when it delivers the message.
        self._settler: Settler | None = None

    @classmethod
    def of(cls, message: OutgoingMessage, *, delivery_attempt: int | None = None) -> Self:
        """``message`` as a broker inside the process delivers it: the same body and
        metadata, with the published object as ``raw_message``."""
        return cls(
            message.body,
            channel=message.channel,
            headers=message.headers,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            content_type=message.content_type,
            delivery_attempt=delivery_attempt,
            raw_message=message,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(channel={self.channel!r}, message_id={self.message_id!r}, "
            f"body=<{len(self.body)} bytes>)"
        )

    @property
    def settlement(self) -> Settlement | None:
        """How the message was settled so far, ``None`` while it is unsettled."""
        return self._settlement

    def decode(self) -> Any:
        """The body decoded by its content type (JSON, text or bytes)."""
        return codec.decode(self.body, self.content_type)

    async def ack(self) -> None:
        """Mark the message processed."""
        if self._settlement is None:
            self._settlement = Settlement.ACK
            settler = self._settler
            if settler is not None and (pending := settler.settled(self, 0.0)) is not None:
                await pending

    async def nack(self, delay: float = 0.0) -> None:
        """Hand the message back to the broker for another delivery, after ``delay``
        seconds (the core keeps the message meanwhile; the consumer goes on)."""
        if self._settlement is None:
            self._settlement = Settlement.NACK
            settler = self._settler
            if settler is not None and (pending := settler.settled(self, delay)) is not None:
                await pending

    async def reject(self) -> None:
        """Refuse the message for good: the broker drops it or moves it to its dead letters."""
        if self._settlement is None:
            self._settlement = Settlement.REJECT
            settler = self._settler
            if settler is not None and (pending := settler.settled(self, 0.0)) is not None:
                await pending


@dataclass(slots=True)
class OutgoingMessage:
    """A message on its way to the broker, already encoded to bytes.

    ``options`` carries broker-specific publish options (a Kafka key, an AMQP priority)
    that only the transport of that broker reads.
    """

    channel: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    message_id: str = field(default_factory=new_message_id)
    correlation_id: str | None = None
    reply_to: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
