"""``nats://``: core NATS and JetStream through nats-py: the connection, publishing,
requests, streams and key-value buckets. What a subscriber fetches from is in
``consume.py``, subjects, headers and errors in ``wire.py``.

A subscriber without a stream is a core NATS subscription: at-most-once (a message
reaches the subscriptions that exist when it is published; a nack drops it). A subscriber
with a ``stream`` consumes through a JetStream consumer: at-least-once, with acks, naks,
terms and the server's own delivery counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Unpack

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, JetStreamManager, api
from nats.js.errors import APIError, BucketNotFoundError
from nats.js.kv import KeyValue

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    RequestTimeout,
    TransportError,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage, new_message_id
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import Deliver, Routing, SubscriptionSpec, Transport
from fastapi_stream.core.url import redact
from fastapi_stream.nats.consume import JetStreamSubscription, KvSubscription, NatsSubscription
from fastapi_stream.nats.options import (
    JStream,
    NatsOptions,
    NatsPublishOptions,
    NatsSubscriberOptions,
)
from fastapi_stream.nats.wire import (
    NatsMessage,
    NatsRouting,
    is_pub_ack,
    is_status,
    nats_error,
    outgoing_headers,
    plain_message,
    subject_matches,
)

__all__ = ["KeyValue", "NatsMessage", "NatsRouting", "NatsTransport", "subject_matches"]

logger = logging.getLogger("fastapi_stream.nats")

_SUBSCRIBER_OPTIONS = NatsSubscriberOptions.__optional_keys__
_NO_RESPONDERS = "503"  # the status a request gets when no subscription has its subject
_STREAM_EXISTS = 10058  # JetStream: "stream name already in use with a different configuration"


class NatsTransport(Transport):
    """A nats-py connection serving ``nats://`` URLs (``tls://`` server URLs work too),
    with :class:`~fastapi_stream.nats.NatsOptions`. It reconnects forever by default and
    logs every disconnect and reconnect."""

    schemes = ("nats",)
    publish_options = NatsPublishOptions.__optional_keys__

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://localhost:4222",
        **options: Unpack[NatsOptions],
    ) -> None:
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.servers = list(servers)
        client_options: dict[str, Any] = {
            key: value for key, value in options.items() if value is not None
        }
        self.stream: str | JStream | None = client_options.pop("stream", None)
        self.connect_timeout: float = client_options.pop("connect_timeout", 5.0)
        self.publish_timeout: float = client_options.pop("publish_timeout", 5.0)
        self.client_options: dict[str, Any] = {
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 2.0,
            "ping_interval": 20.0,
            "max_outstanding_pings": 2,
            "connect_timeout": min(self.connect_timeout, 2.0),
            **client_options,
        }
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        #: Counts reconnects: a subscription set up before the last one checks, in its
        #: next fetch, what the server may have lost.
        self.generation = 0
        self._subscriptions: dict[NatsSubscription, None] = {}
        self._inbox = ""  # where replies to requests arrive: {inbox}.{correlation id in hex}
        self._replies: Replies[Msg] = Replies()
        self._streams: dict[str, JStream] = {}
        if isinstance(self.stream, JStream):
            self._streams[self.stream.name] = self.stream

    @classmethod
    def from_url(cls, url: str) -> NatsTransport:
        return cls(url)

    def describe(self) -> str:
        return ", ".join(redact(server) for server in self.servers)

    def routing(self) -> Routing:
        return NatsRouting()

    # -- connection --------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The nats-py client, for what this transport does not cover."""
        if self._nc is None or self._nc.is_closed:
            raise BrokerNotConnected(f"NATS {self.describe()} is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            self._js = self.client.jetstream(timeout=self.publish_timeout)
        return self._js

    @property
    def jsm(self) -> JetStreamManager:
        return self.client.jsm(timeout=self.publish_timeout)

    async def connect(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        self._closing = False
        nc = Client()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await nc.connect(
                    self.servers,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                    **self.client_options,
                )
        except Exception as exc:
            self._closing = True
            with contextlib.suppress(Exception):
                await nc.close()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
            raise TransportError(
                f"cannot connect to NATS at {self.describe()} within {self.connect_timeout}s: "
                f"{reason}"
            ) from None
        self._nc, self._js = nc, None
        self._inbox = nc.new_inbox()
        await nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        if self.stream is not None:
            try:
                await self.ensure_stream(self.stream)
            except BaseException as exc:
                await self.close()
                if isinstance(exc, Exception):
                    raise nats_error(exc, f"declaring stream {self.stream}") from None
                raise

    async def close(self) -> None:
        nc = self._nc
        if nc is None or self._closing:
            return
        self._closing = True
        self._replies.fail_all(BrokerNotConnected(f"NATS {self.describe()} was closed"))
        for subscription in list(self._subscriptions):  # hand back their messages first
            await subscription.close()
        self._nc = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.publish_timeout):
                await nc.close()
        self._js = None

    async def ping(self, timeout: float) -> bool:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        try:
            async with asyncio.timeout(timeout):
                await nc.flush()
        except Exception:
            return False
        return True

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("NATS %s: %s", self.describe(), exc)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            logger.warning("disconnected from NATS %s; reconnecting", self.describe())

    async def _on_reconnected(self) -> None:
        logger.info("reconnected to NATS %s", self.describe())
        # JetStream state the server may have lost (memory streams, ephemeral consumers)
        # is set up again by each subscription's next fetch.
        self.generation += 1

    async def _on_closed(self) -> None:
        if not self._closing:
            logger.error(
                "the connection to NATS %s is closed for good (reconnect attempts "
                "exhausted); subscribers stopped receiving messages",
                self.describe(),
            )

    # -- JetStream ---------------------------------------------------------------------

    async def ensure_stream(self, stream: str | JStream) -> str:
        """Declare ``stream`` (a :class:`JStream` with ``declare``) and return its name."""
        if isinstance(stream, str):
            return stream
        self._streams[stream.name] = stream
        if not stream.declare:
            return stream.name
        config = api.StreamConfig(
            name=stream.name,
            subjects=list(stream.subjects) or None,
            retention=api.RetentionPolicy(stream.retention),
            storage=api.StorageType(stream.storage),
            max_age=stream.max_age,
            max_msgs=stream.max_msgs,
            max_bytes=stream.max_bytes,
        )
        jsm = self.jsm
        try:
            await jsm.add_stream(config)
        except APIError as exc:
            if exc.err_code != _STREAM_EXISTS:
                raise ConfigurationError(f"cannot declare stream {stream.name!r}: {exc}") from exc
            await jsm.update_stream(config)
        return stream.name

    async def key_value(self, bucket: str, *, declare: bool = True) -> KeyValue:
        """The key-value bucket ``bucket``, created when missing if ``declare``."""
        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            if not declare:
                raise ConfigurationError(
                    f"NATS key-value bucket {bucket!r} does not exist"
                ) from None
            return await self.js.create_key_value(bucket=bucket)

    def _stream_for(self, subject: str) -> str | None:
        for stream in self._streams.values():
            if any(
                subject_matches(pattern, subject) for pattern in stream.subjects or [stream.name]
            ):
                return stream.name
        return None

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        options = message.options
        nc = self.client
        stream = options.get("stream") or self._stream_for(message.channel)
        headers = outgoing_headers(message, jetstream=stream is not None)
        timeout = options.get("timeout", self.publish_timeout)
        try:
            if stream is None:
                await nc.publish(
                    message.channel, message.body, reply=message.reply_to or "", headers=headers
                )
                return
            await self.js.publish(
                message.channel,
                message.body,
                timeout=timeout,
                stream=options.get("stream"),  # the server checks the subject is that stream's
                headers=headers,
            )
        except Exception as exc:
            raise nats_error(exc, "publishing", channel=message.channel, timeout=timeout) from None

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Core publishes go out one after the other (the client only buffers them);
        JetStream's acks are awaited together, not one by one."""
        confirmed = []
        for message in messages:
            if message.options.get("stream") or self._stream_for(message.channel):
                confirmed.append(message)
            else:
                await self.publish(message)
        if len(confirmed) == 1:
            await self.publish(confirmed[0])
        elif confirmed:
            results = await asyncio.gather(*map(self.publish, confirmed), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        # One inbox subscription serves every request, as in nats-py's own request. The
        # reply subject ends with the request's correlation id in hex (a subject token):
        # it finds the waiting request for what carries no correlation id too, the
        # server's "no responders" status.
        correlation_id = message.correlation_id = message.correlation_id or new_message_id()
        reply_to = f"{self._inbox}.{correlation_id.encode().hex()}"
        reply = await self._replies.request(message, reply_to, timeout, self.publish)
        if reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise RequestTimeout(f"no subscriber answers on {message.channel!r}")
        return plain_message(reply)

    async def _on_reply(self, msg: Msg) -> None:
        if is_status(msg):
            if msg.headers is None or msg.headers.get("Status") != _NO_RESPONDERS:
                return
        elif is_pub_ack(msg):
            return  # a stream stores the request's subject; the reply comes after
        with contextlib.suppress(ValueError):
            self._replies.resolve(bytes.fromhex(msg.subject.rpartition(".")[2]).decode(), msg)

    # -- consuming ---------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> NatsSubscription:
        options = spec.options
        unknown = set(options) - _SUBSCRIBER_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"subscriber {spec.channel}: unknown NATS option(s) {sorted(unknown)}; "
                f"use {sorted(_SUBSCRIBER_OPTIONS)}"
            )
        subscription: NatsSubscription
        if options.get("kv_watch"):
            subscription = KvSubscription(self, spec)
        elif options.get("stream") or self.stream is not None:
            subscription = JetStreamSubscription(self, spec)
        elif options.get("durable") or options.get("pull"):
            raise ConfigurationError(
                f"subscriber {spec.channel}: durable= and pull= are JetStream options; "
                "give it stream= too"
            )
        else:
            subscription = NatsSubscription(self, spec)
        try:
            await subscription.open()
        except ConfigurationError:
            raise
        except Exception as exc:
            raise nats_error(exc, f"subscribing to {spec.channel}") from None
        self._subscriptions[subscription] = None
        return subscription

    def forget(self, subscription: NatsSubscription) -> None:
        """``subscription`` closed."""
        self._subscriptions.pop(subscription, None)
