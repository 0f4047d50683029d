"""``nats://``: core NATS and JetStream through nats-py, the only module that imports it.

A subscriber without a stream is a core NATS subscription: at-most-once (a message
reaches the subscriptions that exist when it is published; a nack drops it). A subscriber
with a ``stream`` consumes through a JetStream consumer: at-least-once, with acks,
delayed naks, terms and the server's own delivery counter.

NATS has no fields for message and correlation ids, a reply address (JetStream uses the
reply subject for acks) or a content type, so they travel in the headers ``message_id``,
``correlation_id``, ``reply_to`` and ``content-type`` (FastStream's names). A message
without them is accepted as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, JetStreamManager, api
from nats.js.errors import APIError, BucketNotFoundError, NoStreamResponseError, NotFoundError
from nats.js.kv import KeyValue

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    PublishError,
    RequestTimeout,
    TransportError,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.transport import (
    Deliver,
    Routing,
    Subscription,
    SubscriptionSpec,
    Transport,
)
from fastapi_stream.core.url import redact
from fastapi_stream.nats.options import (
    JStream,
    KvWatch,
    NatsPublishOptions,
    NatsSubscriberOptions,
    PullSub,
)

__all__ = ["KeyValue", "NatsMessage", "NatsRouting", "NatsTransport", "subject_matches"]

logger = logging.getLogger("fastapi_stream.nats")

MESSAGE_ID = "message_id"
CORRELATION_ID = "correlation_id"
REPLY_TO = "reply_to"
CONTENT_TYPE = "content-type"
_ENVELOPE = frozenset({MESSAGE_ID, CORRELATION_ID, REPLY_TO, CONTENT_TYPE})
_SUBSCRIBER_OPTIONS = NatsSubscriberOptions.__optional_keys__
_PUBLISH_OPTIONS = NatsPublishOptions.__optional_keys__
#: Messages a subscription buffers before handing them to the core. A core subscription
#: whose handler falls this far behind drops messages (NATS calls it a slow consumer).
_BUFFER = 65_536
_MAX_BACKOFF = 5.0
_PUB_ACK_KEYS = frozenset({"stream", "seq", "duplicate", "domain"})
_STREAM_EXISTS = 10058  # JetStream: "stream name already in use with a different configuration"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    tokens = subject.split(".")
    parts = pattern.split(".")
    for i, part in enumerate(parts):
        if part == ">":
            return len(tokens) > i
        if i >= len(tokens) or (part != "*" and part != tokens[i]):
            return False
    return len(parts) == len(tokens)


def _wire_subject(spec: SubscriptionSpec) -> str:
    """The subject to subscribe to: every ``{param}`` becomes ``*``."""
    return spec.channel.with_wildcards("*")


def _stream_name(stream: object) -> str | None:
    return (
        stream.name if isinstance(stream, JStream) else stream if isinstance(stream, str) else None
    )


def _is_pub_ack(msg: Msg) -> bool:
    """Whether ``msg`` is a stream's ack of a request published to a subject it stores:
    a core request to such a subject gets one before the responder's reply."""
    if msg.headers or not msg.data.startswith(b'{"stream":'):
        return False
    try:
        ack = json.loads(msg.data)
    except ValueError:
        return False
    return isinstance(ack, dict) and "seq" in ack and set(ack) <= _PUB_ACK_KEYS


class NatsRouting(Routing):
    """NATS rules for the test broker: ``*``/``>`` wildcards, and subscribers of one
    JetStream durable consumer competing for its messages."""

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        durable = spec.options.get("durable")
        if durable:
            return f"{_stream_name(spec.options.get('stream'))}#{durable}"
        return super().group_key(spec)

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        return subject_matches(_wire_subject(spec), message.channel)


def _split_headers(
    raw: Mapping[str, str] | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(user headers, envelope headers)."""
    if not raw:
        return {}, {}
    headers: dict[str, str] = {}
    envelope: dict[str, str] = {}
    for key, value in raw.items():
        if key in _ENVELOPE:
            envelope[key] = value
        elif not key.startswith("Nats-Expected-"):  # a publish-time check, not data
            headers[key] = value
    return headers, envelope


def _is_status(msg: Msg) -> bool:
    """A JetStream heartbeat or flow-control message: no data, a ``Status`` header."""
    headers = msg.headers
    return headers is not None and "Status" in headers and not msg.data


def _plain_message(msg: Msg, *, reply_to: str | None = None) -> StreamMessage:
    """A core NATS message (or a reply): nothing to settle."""
    headers, envelope = _split_headers(msg.headers)
    return StreamMessage(
        msg.data,
        channel=msg.subject,
        headers=headers,
        message_id=envelope.get(MESSAGE_ID),
        correlation_id=envelope.get(CORRELATION_ID),
        reply_to=reply_to or envelope.get(REPLY_TO),
        content_type=envelope.get(CONTENT_TYPE),
        raw_message=msg,
    )


class NatsMessage(StreamMessage):
    """A JetStream delivery: ack, nak (with a delay) and term go to the server, and
    :meth:`in_progress` holds off redelivery while a long handler runs."""

    __slots__ = ("_consumer",)

    def __init__(self, msg: Msg, consumer: _Consumer) -> None:
        headers, envelope = _split_headers(msg.headers)
        meta = msg.metadata
        super().__init__(
            msg.data,
            channel=msg.subject,
            headers=headers,
            # Stable across redeliveries: the id the producer gave, else the stream position.
            message_id=envelope.get(MESSAGE_ID)
            or headers.get("Nats-Msg-Id")
            or f"{meta.stream}.{meta.sequence.stream}",
            correlation_id=envelope.get(CORRELATION_ID),
            reply_to=envelope.get(REPLY_TO),
            content_type=envelope.get(CONTENT_TYPE),
            delivery_attempt=meta.num_delivered,
            raw_message=msg,
        )
        self._consumer = consumer
        consumer.unsettled[self] = None

    async def in_progress(self) -> None:
        """Tell JetStream the message is still being worked on (resets its ack wait)."""
        await _settle(self.raw_message.in_progress())

    async def _ack(self) -> None:
        self._consumer.unsettled.pop(self, None)
        await _settle(self.raw_message.ack())

    async def _nack(self, delay: float) -> None:
        self._consumer.unsettled.pop(self, None)
        await _settle(self.raw_message.nak(delay if delay > 0 else None))

    async def _reject(self) -> None:
        self._consumer.unsettled.pop(self, None)
        await _settle(self.raw_message.term())


async def _settle(operation: Awaitable[None]) -> None:
    try:
        await operation
    except nats_errors.Error as exc:
        raise TransportError(f"NATS could not settle the message: {exc}") from exc


class _Consumer(Subscription):
    """One subscriber's feed: a task that takes messages from a source and delivers them,
    one ``deliver`` call at a time, backing off (never giving up) when the source fails.

    The default source is a core subscription whose callback only buffers: nats-py
    cancels its callback task on unsubscribe, and must never cancel a handler that way.
    """

    def __init__(self, transport: NatsTransport, spec: SubscriptionSpec, deliver: Deliver) -> None:
        self.transport = transport
        self.spec = spec
        self.deliver = deliver
        self.subject = _wire_subject(spec)
        self.unsettled: dict[NatsMessage, None] = {}
        self.task: asyncio.Task[None] | None = None
        self.queue: asyncio.Queue[Msg] = asyncio.Queue(_BUFFER)
        self.sub: NatsSubscription | None = None
        self.dropped = 0
        self._delivering = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.subject!r})"

    async def start(self) -> None:
        await self._open()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=repr(self))

    async def _open(self) -> None:
        await self._subscribe(self.subject, self.spec.group)

    async def recover(self) -> None:
        """Set up again what the server may have lost (after a restart)."""

    async def _subscribe(self, subject: str, queue: str | None) -> None:
        client = self.transport.client
        self.sub = await client.subscribe(subject, queue=queue or "", cb=self._receive)
        await client.flush()

    async def _receive(self, msg: Msg) -> None:
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("%r is too slow: %d message(s) dropped", self, self.dropped)

    async def _next(self) -> Sequence[StreamMessage]:
        """What arrived: the next message, with the others already buffered behind it (up
        to the prefetch) in the same ``deliver``. What a stop leaves undelivered in it is
        unsettled, so JetStream gets it back at release, like the rest of the buffer."""
        queue = self.queue
        msgs = [await queue.get()]
        room = self.spec.prefetch
        while len(msgs) < room and not queue.empty():
            msgs.append(queue.get_nowait())
        return [self._message(msg) for msg in msgs if not _is_status(msg)]

    def _message(self, msg: Msg) -> StreamMessage:
        return _plain_message(msg, reply_to=msg.reply or None)

    async def _close_source(self) -> None:
        if self.sub is not None:
            sub, self.sub = self.sub, None
            await sub.unsubscribe()

    async def _run(self) -> None:
        failures = 0
        while not self._stopped:
            try:
                batch = await self._next()
            except TimeoutError:
                continue  # nothing to fetch yet
            except Exception as exc:
                if self._stopped:
                    return
                failures += 1
                delay = min(0.1 * 2**failures, _MAX_BACKOFF)
                logger.warning("%r: %s; trying again in %.1fs", self, exc, delay)
                await asyncio.sleep(delay)
                with contextlib.suppress(Exception):
                    await self.recover()
                continue
            failures = 0
            if not batch:
                continue
            self._delivering = True
            try:
                await self.deliver(batch)
            except Exception:
                logger.exception("%r: delivering messages failed", self)
            finally:
                self._delivering = False

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.task is not None and not self._delivering:
            self.task.cancel()  # it waits for messages, not in a handler
        with contextlib.suppress(Exception):
            await self._close_source()

    async def release(self) -> None:
        """At close: hand what was delivered and never settled back to JetStream now,
        instead of after its ack wait (the memory broker does the same)."""
        pending, self.unsettled = list(self.unsettled), {}
        for message in pending:
            with contextlib.suppress(Exception):
                await message.raw_message.nak()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class _CoreConsumer(_Consumer):
    """A core NATS subscription, in a queue group when the subscriber has a ``group``."""


class _JetStreamConsumer(_Consumer):
    """A JetStream consumer: push (fed by its deliver subject) or pull (``fetch``)."""

    def __init__(self, transport: NatsTransport, spec: SubscriptionSpec, deliver: Deliver) -> None:
        super().__init__(transport, spec, deliver)
        options = spec.options
        stream: str | JStream | None = options.get("stream") or transport.stream
        assert stream is not None
        self.stream_option = stream
        self.stream = _stream_name(self.stream_option) or ""
        durable = options.get("durable")
        if not durable and spec.group:
            durable = re.sub(r"[^A-Za-z0-9_-]", "_", f"{spec.group}_{self.subject}")
        self.durable: str | None = durable
        pull = options.get("pull")
        self.pull = pull if isinstance(pull, PullSub) else PullSub() if pull else None
        self.psub: JetStreamContext.PullSubscription | None = None
        policy = options.get("deliver_policy")
        self.config = api.ConsumerConfig(
            durable_name=durable,
            name=durable or (None if self.pull is None else os.urandom(8).hex()),
            filter_subject=self.subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_ack_pending=spec.prefetch,
            ack_wait=options.get("ack_wait"),
            max_deliver=options.get("max_deliver"),
            inactive_threshold=options.get("inactive_threshold"),
            # A durable starts with what the stream holds (NATS's default); a subscriber
            # of its own, like a core subscription, with what is published from now on.
            deliver_policy=api.DeliverPolicy(policy or ("all" if durable else "new")),
        )
        if self.pull is None:
            self.config.deliver_subject = transport.client.new_inbox()
            if durable:
                # All instances of a durable push consumer share its deliver subject and
                # group, so they compete for its messages.
                self.config.deliver_group = spec.group or durable

    async def _consumer(self) -> api.ConsumerInfo:
        """The consumer's info, created (and its stream declared) when missing."""
        jsm = self.transport.jsm
        await self.transport.ensure_stream(self.stream_option)
        if self.durable:
            try:
                info: api.ConsumerInfo = await jsm.consumer_info(self.stream, self.durable)
            except NotFoundError:
                pass
            else:
                if (info.config.deliver_subject is None) != (self.pull is not None):
                    raise ConfigurationError(
                        f"JetStream consumer {self.durable!r} on stream {self.stream!r} is a "
                        f"{'pull' if self.pull is None else 'push'} consumer; "
                        "use another durable name or change pull="
                    )
                return info
        return await jsm.add_consumer(self.stream, self.config)

    async def _open(self) -> None:
        info = await self._consumer()
        if self.pull is not None:
            self.psub = await self.transport.js.pull_subscribe_bind(info.name, stream=self.stream)
            return
        # An existing durable keeps its deliver subject and group: join them.
        self.config.deliver_subject = info.config.deliver_subject
        self.config.deliver_group = info.config.deliver_group
        assert info.config.deliver_subject is not None
        await self._subscribe(info.config.deliver_subject, info.config.deliver_group)

    async def recover(self) -> None:
        await self._consumer()

    async def _next(self) -> Sequence[StreamMessage]:
        if self.psub is None:
            return await super()._next()
        assert self.pull is not None
        # One fetch request per call: after a reconnect the next fetch asks again, so the
        # loop resumes where nats.py#504 stalls.
        msgs = await self.psub.fetch(self.pull.batch_size or self.spec.prefetch, self.pull.timeout)
        return [NatsMessage(msg, self) for msg in msgs]

    def _message(self, msg: Msg) -> StreamMessage:
        return NatsMessage(msg, self)

    async def _close_source(self) -> None:
        if self.psub is not None:
            psub, self.psub = self.psub, None
            await psub.unsubscribe()
            return
        await super()._close_source()
        # Buffered but never handed to a handler: back to JetStream at once.
        while not self.queue.empty():
            with contextlib.suppress(Exception):
                await self.queue.get_nowait().nak()


class _KvConsumer(_Consumer):
    """A key-value watch: each change of a matching key is a message on channel ``key``."""

    def __init__(self, transport: NatsTransport, spec: SubscriptionSpec, deliver: Deliver) -> None:
        super().__init__(transport, spec, deliver)
        watch = spec.options["kv_watch"]
        self.watch = watch if isinstance(watch, KvWatch) else KvWatch(str(watch))
        self.watcher: Any = None  # KeyValue.KeyWatcher, untyped in nats-py

    async def _open(self) -> None:
        kv = await self.transport.key_value(self.watch.bucket, declare=self.watch.declare)
        self.watcher = await kv.watch(
            self.subject,
            include_history=self.watch.include_history,
            ignore_deletes=self.watch.ignore_deletes,
        )

    async def _next(self) -> Sequence[StreamMessage]:
        assert self.watcher is not None
        entry = await self.watcher.updates(timeout=5.0)
        if entry is None:
            return ()  # the end of the initial values
        return (
            StreamMessage(
                entry.value or b"",
                channel=entry.key,
                headers={
                    "kv-bucket": entry.bucket,
                    "kv-operation": entry.operation or "PUT",
                    "kv-revision": str(entry.revision),
                },
                message_id=f"{entry.bucket}.{entry.revision}",
                raw_message=entry,
            ),
        )

    async def _close_source(self) -> None:
        if self.watcher is not None:
            watcher, self.watcher = self.watcher, None
            await watcher.stop()


class NatsTransport(Transport):
    """A nats-py connection serving ``nats://`` URLs (``tls://`` server URLs work too).

    It reconnects forever by default (``max_reconnect_attempts=-1``, where nats-py gives
    up after 60 attempts) and logs every disconnect and reconnect. ``stream`` is a
    default JetStream stream: declared at connect, used by every subscriber that names
    no stream of its own, and publishes to its subjects wait for JetStream's ack.
    """

    schemes = ("nats",)

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://localhost:4222",
        *,
        stream: str | JStream | None = None,
        connect_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        max_reconnect_attempts: int = -1,
        reconnect_time_wait: float = 2.0,
        **client_options: Any,
    ) -> None:
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.servers = list(servers)
        self.stream = stream
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.client_options: dict[str, Any] = {
            "max_reconnect_attempts": max_reconnect_attempts,
            "reconnect_time_wait": reconnect_time_wait,
            "connect_timeout": min(connect_timeout, 2.0),
            **client_options,
        }
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self._consumers: list[_Consumer] = []
        self._streams: dict[str, JStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        if isinstance(stream, JStream):
            self._streams[stream.name] = stream

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
        if self.stream is not None:
            try:
                await self.ensure_stream(self.stream)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is None:
            return
        self._closing = True
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            await consumer.stop()
            await consumer.release()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.publish_timeout):
                await nc.flush()  # the naks above
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
        # JetStream state the server may have lost (memory streams, ephemeral consumers).
        for consumer in self._consumers:
            task = asyncio.get_running_loop().create_task(self._recover(consumer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _recover(self, consumer: _Consumer) -> None:
        try:
            await consumer.recover()
        except Exception as exc:
            logger.warning("%r could not be set up again after a reconnect: %s", consumer, exc)

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
        unknown = set(options) - _PUBLISH_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown NATS publish option(s) {sorted(unknown)}; use {sorted(_PUBLISH_OPTIONS)}"
            )
        nc = self.client
        headers = dict(message.headers)
        headers[MESSAGE_ID] = message.message_id
        if message.correlation_id:
            headers[CORRELATION_ID] = message.correlation_id
        if message.reply_to:
            headers[REPLY_TO] = message.reply_to
        if message.content_type:
            headers[CONTENT_TYPE] = message.content_type
        stream = options.get("stream") or self._stream_for(message.channel)
        try:
            if stream is None:
                await nc.publish(
                    message.channel, message.body, reply=message.reply_to or "", headers=headers
                )
                return
            await self.js.publish(
                message.channel,
                message.body,
                timeout=options.get("timeout", self.publish_timeout),
                stream=options.get("stream"),  # the server checks the subject is that stream's
                headers=headers,
            )
        except nats_errors.TimeoutError:
            raise PublishError(
                f"JetStream did not confirm the message to {message.channel!r} in time; it may "
                "still have been stored"
            ) from None
        except NoStreamResponseError:
            raise PublishError(f"no JetStream stream takes subject {message.channel!r}") from None
        except nats_errors.ConnectionClosedError:
            raise BrokerNotConnected(f"NATS {self.describe()} is not connected") from None
        except nats_errors.Error as exc:
            raise PublishError(f"NATS refused the message to {message.channel!r}: {exc}") from exc

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        nc = self.client
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        message.reply_to = inbox
        try:
            async with asyncio.timeout(timeout):
                await self.publish(message)
                while True:
                    reply = await sub.next_msg(timeout=None)
                    status = reply.headers.get("Status") if reply.headers else None
                    if status == "503":
                        raise RequestTimeout(f"no subscriber answers on {message.channel!r}")
                    if not status and not _is_pub_ack(reply):
                        return _plain_message(reply)
        except RequestTimeout:
            raise
        except TimeoutError:
            raise RequestTimeout(f"no reply from {message.channel!r} within {timeout}s") from None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- consuming ---------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        options = spec.options
        unknown = set(options) - _SUBSCRIBER_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"subscriber {spec.channel}: unknown NATS option(s) {sorted(unknown)}; "
                f"use {sorted(_SUBSCRIBER_OPTIONS)}"
            )
        consumer: _Consumer
        if options.get("kv_watch"):
            consumer = _KvConsumer(self, spec, deliver)
        elif options.get("stream") or self.stream is not None:
            consumer = _JetStreamConsumer(self, spec, deliver)
        elif options.get("durable") or options.get("pull"):
            raise ConfigurationError(
                f"subscriber {spec.channel}: durable= and pull= are JetStream options; "
                "give it stream= too"
            )
        else:
            consumer = _CoreConsumer(self, spec, deliver)
        try:
            await consumer.start()
        except (ConfigurationError, TransportError):
            raise
        except Exception as exc:
            raise TransportError(f"cannot subscribe to {spec.channel} on NATS: {exc}") from exc
        self._consumers.append(consumer)
        return consumer
