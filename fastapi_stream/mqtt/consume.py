"""What an MQTT subscriber fetches and settles.

Each subscriber has a connection of its own (a client id of its own, so its session
holds exactly its unacknowledged messages and its ``receive_maximum`` is its prefetch).
The core's consume loop drives it (see ``docs/transports.md``):

* ``fetch`` drains the connection's bounded buffer; when the connection is gone it
  raises, and the next ``fetch`` (after the core's backoff) connects and subscribes
  again. zmqtt's own reconnect is off: the core owns the backoff.
* ``settle`` sends the PUBACK (QoS 1) or PUBREC (QoS 2, PUBCOMP follows) of every
  message, acked or rejected alike: MQTT has no negative acknowledgement.
* ``redeliver``: MQTT cannot give a message back to the broker on a live connection, so
  a nacked message is delivered again in process, from this subscription's buffer,
  and stays unacknowledged meanwhile: if the process dies first, the session has it.
* ``close`` leaves what is unsettled unacknowledged: with a persistent session (a fixed
  ``client_id``) the broker keeps the subscription and delivers those messages again
  when the subscriber comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from zmqtt import Message, MQTTClient, MQTTError, QoS, RetainHandling
from zmqtt import Subscription as ZSubscription

from fastapi_stream.core.errors import TransportError
from fastapi_stream.core.message import StreamMessage
from fastapi_stream.core.transport import Subscription, SubscriptionSpec
from fastapi_stream.mqtt.options import qos_of
from fastapi_stream.mqtt.routing import shared_filter
from fastapi_stream.mqtt.wire import again, message_of

if TYPE_CHECKING:
    from fastapi_stream.mqtt.transport import MqttTransport

__all__ = ["MqttSubscription"]

log = logging.getLogger("fastapi_stream.mqtt")

#: The longest a fetch waits before returning ``[]``.
_IDLE = 1.0


def _take_queued(sub: ZSubscription, limit: int) -> list[StreamMessage]:
    """Up to ``limit`` messages already in the subscription's buffer, without waiting.

    zmqtt's public ``get_message()`` starts a task per call to watch for connection
    failures; for the messages already buffered behind the first one that costs more
    than the rest of the pipeline, so they are taken from its queue directly. This is
    the other place that touches zmqtt's internals (see :func:`_tolerate_one_over`).
    """
    queue: asyncio.Queue[Message] | None = getattr(sub, "_queue", None)
    taken: list[StreamMessage] = []
    while queue is not None and len(taken) < limit and not queue.empty():
        taken.append(message_of(queue.get_nowait()))
    return taken


def _tolerate_one_over(client: MQTTClient) -> None:
    """Keep asking the broker for ``receive_maximum``, without zmqtt closing the connection
    when the broker sends more.

    Mosquitto 2.0.11 (Debian 12, Ubuntu 22.04) sends one PUBLISH over the client's
    receive maximum under load; zmqtt then closes the connection (MQTT 5 allows it), and
    a clean session loses what was unacknowledged. The buffer has room for twice the
    limit, so the extra message never blocks zmqtt's reader. This and
    :func:`_take_queued` are the only places that touch zmqtt's internals.
    """
    inbound = getattr(getattr(client, "_protocol", None), "inbound", None)
    if inbound is not None and hasattr(inbound, "_receive_maximum"):
        setattr(inbound, "_receive_maximum", None)  # noqa: B010 - a Final attribute


class MqttSubscription(Subscription):
    """One subscriber's connection and subscription."""

    def __init__(
        self, transport: MqttTransport, spec: SubscriptionSpec, client_id: str, *, persistent: bool
    ) -> None:
        self.transport = transport
        self.topic = shared_filter(spec)
        self.qos = QoS(qos_of(spec.options, transport.qos))
        self.prefetch = max(1, spec.prefetch)
        self.client_id = client_id
        self.persistent = persistent
        self.client: MQTTClient | None = None
        self.sub: ZSubscription | None = None
        #: Nacked messages, still unacknowledged, handed out again by the next fetch.
        self.again: deque[StreamMessage] = deque()
        self.reconnecting = False  # set once subscribed: a later open() is a reconnect

    async def open(self) -> None:
        """Connect and subscribe; raise :class:`TransportError` if the broker refuses."""
        await self._drop()
        transport = self.transport
        client = transport.new_client(
            self.client_id, persistent=self.persistent, receive_maximum=self.prefetch
        )
        try:
            async with asyncio.timeout(transport.connect_timeout):
                await client.connect()
                resumed = client.connection_info.session_present
                _tolerate_one_over(client)
                sub = client.subscribe(
                    self.topic,
                    qos=self.qos,
                    auto_ack=self.qos is QoS.AT_MOST_ONCE,
                    receive_buffer_size=2 * self.prefetch,
                    retain_handling=self._retained(),
                )
                await sub.start()
        except (MQTTError, OSError, TimeoutError) as exc:
            await _disconnect(client)
            raise TransportError(
                f"cannot subscribe to MQTT {self.topic!r} at {transport.describe()}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if resumed:
            self.again.clear()  # unacknowledged in the session: the broker sends them again
        self.client, self.sub = client, sub
        self.reconnecting = True

    def _retained(self) -> RetainHandling:
        """Retained messages at start, as every MQTT client gets them; after a reconnect
        only where the broker lost the subscription (MQTT 5), not once more."""
        if self.reconnecting and self.transport.v5:
            return RetainHandling.SEND_IF_NOT_EXISTS
        return RetainHandling.SEND_ON_SUBSCRIBE

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        if self.again:
            return [self.again.popleft() for _ in range(min(limit, len(self.again)))]
        if self.sub is None:
            await self.open()
        sub = self.sub
        assert sub is not None
        try:
            async with asyncio.timeout(_IDLE):
                first = await sub.get_message()
        except TimeoutError:
            return []
        except Exception:
            await self._drop()  # connect and subscribe again at the next fetch
            raise
        return [message_of(first), *_take_queued(sub, limit - 1)]

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        async with self.transport.settling():
            for message in (*acked, *rejected):
                await message.raw_message.ack()

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        self.again.extendleft(again(message) for message in reversed(messages))

    async def close(self) -> None:
        client, sub = self.client, self.sub
        self.client = self.sub = None
        self.again.clear()
        if client is None:
            return
        try:
            async with asyncio.timeout(self.transport.connect_timeout):
                if sub is not None and self.persistent:
                    await sub.detach()  # no UNSUBSCRIBE: the session keeps it, unacked too
                await client.disconnect()
        except Exception as exc:
            log.warning("mqtt %r: closing the subscriber's connection failed: %s", self.topic, exc)

    async def _drop(self) -> None:
        client, self.client, self.sub = self.client, None, None
        if client is not None:
            await _disconnect(client)


async def _disconnect(client: MQTTClient) -> None:
    """Close a connection that may be broken already."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await client.disconnect()
