"""``mqtt://`` and ``mqtts://``: MQTT 5 (or 3.1.1) on zmqtt.

The only modules of fastapi_stream that import zmqtt are this one, ``consume.py`` (what a
subscriber fetches and settles) and ``wire.py`` (messages to and from PUBLISH packets).
zmqtt is the client because it acknowledges by hand through its public API
(``auto_ack=False`` and ``Message.ack()``, which for QoS 2 holds back the PUBREC too),
sends ``receive_maximum`` and keeps a persistent session's subscriptions on detach.

Connections: one for publishing (which also receives the replies to requests on a topic
of its own), and one per subscriber (see ``consume.py``). zmqtt's automatic reconnect is
off everywhere: a subscriber's next fetch connects again with the core's backoff, and a
publish or a readiness probe after an outage opens a new publishing connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import uuid
from collections.abc import Sequence
from typing import Literal, Unpack
from urllib.parse import parse_qs, unquote, urlsplit

from zmqtt import MQTTClient, MQTTDisconnectedError, MQTTError, QoS, ReconnectConfig
from zmqtt import Subscription as ZSubscription

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    PublishError,
    TransportError,
    client_errors,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.options import check_options
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import Deliver, Subscription, SubscriptionSpec, Transport
from fastapi_stream.core.url import redact
from fastapi_stream.mqtt.consume import MqttSubscription
from fastapi_stream.mqtt.options import MqttOptions, MqttPublishOptions, QoSLevel, qos_of
from fastapi_stream.mqtt.routing import MqttRouting, shared_filter
from fastapi_stream.mqtt.wire import message_of, payload_of

__all__ = ["MqttTransport"]

#: The client's errors, raised as PublishError or TransportError.
_ERRORS = (MQTTError, OSError, TransportError)

log = logging.getLogger("fastapi_stream.mqtt")

Version = Literal["5.0", "3.1.1"]
_VERSIONS: dict[str, Version] = {"5": "5.0", "5.0": "5.0", "3.1.1": "3.1.1", "4": "3.1.1"}


class MqttTransport(Transport):
    """A connection to an MQTT broker (``mqtt://user:pass@host:1883``, ``mqtts://`` for TLS
    with the server certificate verified), with :class:`~fastapi_stream.mqtt.MqttOptions`.

    ``client_id`` makes sessions persistent: each subscriber connects as
    ``{client_id}-{digest of its topic filter}`` with ``clean_start=False`` and a session
    that outlives the connection by ``session_expiry`` seconds, so what it had not
    acknowledged when it stopped or died is delivered to it again when it comes back.
    """

    schemes = ("mqtt", "mqtts")
    publish_options = MqttPublishOptions.__optional_keys__

    def __init__(self, url: str = "mqtt://localhost:1883", **options: Unpack[MqttOptions]) -> None:
        check_options(type(self).__name__, options, MqttOptions.__optional_keys__)
        parts = urlsplit(url)
        if parts.scheme not in self.schemes:
            raise ConfigurationError(f"an MQTT URL starts with mqtt:// or mqtts://, not {url!r}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        chosen = options.get("version") or query.get("version", "5.0")
        if chosen not in _VERSIONS:
            raise ConfigurationError(f"MQTT version must be '5.0' or '3.1.1', not {chosen!r}")
        self.url = url
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.tls = options.get("tls") or (
            ssl.create_default_context() if parts.scheme == "mqtts" else None
        )
        self.client_id = options.get("client_id") or query.get("client_id")
        self.version: Version = _VERSIONS[chosen]
        self.v5 = self.version == "5.0"
        self.qos: QoSLevel = qos_of(options, 1)
        self.session_expiry = options.get("session_expiry", 3600)
        self.keepalive = options.get("keepalive", 60)
        self.publish_timeout = options.get("publish_timeout", 5.0)
        self.connect_timeout = options.get("connect_timeout", 5.0)
        self._routing = MqttRouting()
        self._client: MQTTClient | None = None
        self._lock = asyncio.Lock()
        self._subscribers: dict[str, int] = {}
        self._inbox = f"fastapi-stream/replies/{uuid.uuid4().hex}"
        self._inbox_reader: asyncio.Task[None] | None = None
        self._requests: Replies[StreamMessage] = Replies()

    @classmethod
    def from_url(cls, url: str) -> MqttTransport:
        return cls(url)

    def describe(self) -> str:
        return redact(self.url)

    def routing(self) -> MqttRouting:
        return self._routing

    def new_client(
        self, client_id: str, *, persistent: bool, receive_maximum: int | None = None
    ) -> MQTTClient:
        """A client (not connected yet) with this transport's settings."""
        return MQTTClient(
            self.host,
            self.port,
            client_id=client_id,
            keepalive=self.keepalive,
            clean_session=not persistent,
            username=self.username,
            password=self.password,
            tls=self.tls,
            reconnect=ReconnectConfig(enabled=False),
            mqtt_connect_timeout=self.connect_timeout,
            version=self.version,
            session_expiry_interval=self.session_expiry if persistent and self.v5 else 0,
            receive_maximum=min(receive_maximum, 65535) if receive_maximum and self.v5 else None,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        self._lock = asyncio.Lock()  # asyncio primitives belong to one event loop
        self._subscribers.clear()
        await self._publisher()

    async def _publisher(self) -> MQTTClient:
        """The publishing connection, opened again if it was lost."""
        client = self._client
        if client is not None and _alive(client):
            return client
        async with self._lock:
            if self._client is not None and _alive(self._client):
                return self._client
            await self._drop_publisher()
            client = self.new_client(f"fastapi-stream-{uuid.uuid4().hex[:16]}", persistent=False)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await client.connect()
            except (MQTTError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await client.disconnect()
                raise TransportError(
                    f"cannot connect to MQTT at {self.describe()}: {type(exc).__name__}: {exc}"
                ) from None
            self._client = client
            return client

    async def _drop_publisher(self) -> None:
        reader, self._inbox_reader = self._inbox_reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.disconnect()

    async def close(self) -> None:
        self._requests.fail_all(BrokerNotConnected(f"{self.describe()} was closed"))
        await self._drop_publisher()

    async def ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                client = await self._publisher()
                await client.ping(timeout)
                return True
        except Exception:
            return False

    def settling(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Bound a subscriber's acknowledgements like a publish."""
        return self._client_errors("the acknowledgement", TransportError)

    def _client_errors(
        self, what: str, error: type[TransportError] = PublishError
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """``what`` bounded by ``publish_timeout``, zmqtt's errors raised as ``error``."""
        broker, timeout = f"MQTT at {self.describe()}", self.publish_timeout
        return client_errors(what, _ERRORS, broker=broker, timeout=timeout, error=error)

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        async with self._client_errors(f"the publish to {message.channel!r}"):
            await self._send(await self._publisher(), message)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish ``messages`` together: their acknowledgements are awaited at once."""
        if len(messages) == 1:
            await self.publish(messages[0])
            return
        async with self._client_errors(f"{len(messages)} publishes"):
            client = await self._publisher()
            sent = (self._send(client, message) for message in messages)
            for outcome in await asyncio.gather(*sent, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome

    async def _send(self, client: MQTTClient, message: OutgoingMessage) -> None:
        payload, properties = payload_of(message, v5=self.v5)
        await client.publish(
            message.channel,
            payload,
            qos=QoS(qos_of(message.options, self.qos)),
            retain=bool(message.options.get("retain", False)),
            properties=properties,
        )

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        """Publish with ``response_topic`` (in the envelope on 3.1.1) set to this
        transport's reply topic and wait for the reply with the request's correlation id."""
        if self._client is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        async with self._client_errors("the reply subscription"):
            await self._listen_for_replies()
        return await self._requests.request(message, self._inbox, timeout, self.publish)

    async def _listen_for_replies(self) -> None:
        client = await self._publisher()
        if self._inbox_reader is not None and not self._inbox_reader.done():
            return
        sub = client.subscribe(self._inbox, qos=QoS.AT_LEAST_ONCE)
        await sub.start()
        self._inbox_reader = asyncio.create_task(self._read_replies(sub))

    async def _read_replies(self, sub: ZSubscription) -> None:
        """Hand each reply to its waiting request, until the connection is lost (the
        next request subscribes again)."""
        with contextlib.suppress(MQTTError, OSError):
            async for raw in sub:
                reply = message_of(raw)
                self._requests.resolve(reply.correlation_id, reply)

    # -- consuming ---------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        topic = shared_filter(spec)
        if self.client_id is None:
            client_id, persistent = f"fastapi-stream-{uuid.uuid4().hex[:16]}", False
        else:
            # The same subscriber of the same app gets the same session after a restart.
            digest = hashlib.sha256(topic.encode()).hexdigest()[:10]
            count = self._subscribers[digest] = self._subscribers.get(digest, 0) + 1
            client_id = f"{self.client_id}-{digest}" + (f"-{count}" if count > 1 else "")
            persistent = True
        subscription = MqttSubscription(self, spec, client_id, persistent=persistent)
        await subscription.open()
        return subscription


def _alive(client: MQTTClient) -> bool:
    try:
        client.connection_info  # noqa: B018 - raises once the connection is gone
    except MQTTDisconnectedError:
        return False
    return True
