"""What a NATS subscriber fetches from, for the core's consume loop (``core/consume.py``):
a core subscription (at-most-once, nothing to settle), a JetStream push or pull consumer
(acks, naks and terms go to the server) or a key-value watch.

A source's callback only buffers (nats-py cancels a callback task on unsubscribe, and
must never cancel a handler that way); ``fetch`` drains the buffer, and on a pull consumer
sends the pull requests that fill it. nats-py reconnects by itself and renews core
subscriptions; what the server may have lost (a memory stream, a consumer, an open pull
request) is set up again by the next ``fetch`` after a reconnect or a failed fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as ClientSubscription
from nats.js import api
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from fastapi_stream.core.errors import ConfigurationError, TransportError
from fastapi_stream.core.message import StreamMessage
from fastapi_stream.core.transport import Subscription, SubscriptionSpec
from fastapi_stream.nats.options import JStream, KvWatch, PullSub
from fastapi_stream.nats.wire import (
    NatsMessage,
    is_status,
    kv_message,
    nats_error,
    plain_message,
    stream_name,
    wire_subject,
)

if TYPE_CHECKING:
    from fastapi_stream.nats.transport import NatsTransport

__all__ = ["JetStreamSubscription", "KvSubscription", "NatsSubscription"]

logger = logging.getLogger("fastapi_stream.nats")

#: Messages a core subscription buffers for the core. One whose handlers fall this far
#: behind drops messages (NATS calls it a slow consumer).
_BUFFER = 65_536
#: How long ``fetch`` waits for a push source before it returns nothing.
_IDLE = 1.0
_ACK, _NAK, _TERM, _WPI = b"+ACK", b"-NAK", b"+TERM", b"+WPI"
_ACK_WAIT = 30.0  # JetStream's default
#: Status codes on a pull request's inbox: a heartbeat, and the ends that are no error
#: (no messages, expired).
_HEARTBEAT, _REQUEST_OVER = "100", ("404", "408")
#: How long past its expiry a pull request counts as open, waiting for the server's 408.
_GRACE = 1.0


class NatsSubscription(Subscription):
    """A core NATS subscription, and what every NATS subscription shares: the buffer its
    callback fills, and setting up again what a reconnect or a failed fetch may have lost
    before the next fetch."""

    def __init__(self, transport: NatsTransport, spec: SubscriptionSpec) -> None:
        self.transport = transport
        self.spec = spec
        self.subject = wire_subject(spec)
        self.queue: asyncio.Queue[Msg] = asyncio.Queue(max(_BUFFER, spec.prefetch))
        self.sub: ClientSubscription | None = None
        self.dropped = 0
        self.closed = False
        # The connection (counted by reconnects) this was set up on, whether a fetch failed
        # since (either way the next fetch sets it up again first), and when it last did.
        self._generation = transport.generation
        self._broken = False
        self._checked = time.monotonic()

    #: An idle subscription checks this often that what it consumes from still exists
    #: (a consumer deleted under it goes silent, it does not fail).
    check_every = 30.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.subject!r})"

    async def open(self) -> None:
        """Set up consuming (at subscribe)."""
        await self._subscribe(self.subject, self.spec.group)

    async def reopen(self) -> None:
        """Set up again what the server may have lost; nats-py renews core subscriptions."""

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

    # -- the seam ----------------------------------------------------------------------

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        transport = self.transport
        if self._broken or self._generation != transport.generation:
            generation, self._broken = transport.generation, True
            try:
                await self.reopen()
            except Exception as exc:
                raise nats_error(exc, f"setting up {self!r} again") from None
            self._generation, self._broken = generation, False
            self._checked = time.monotonic()
        try:
            messages = await self._take(limit)
        except Exception as exc:
            self._broken = True
            raise nats_error(exc, f"fetching for {self!r}") from None
        if not messages and time.monotonic() - self._checked > self.check_every:
            self._broken = True  # idle: the next fetch checks first
        return messages

    async def _take(self, limit: int) -> Sequence[StreamMessage]:
        """What the callback buffered, up to ``limit``, waiting up to a second for it."""
        queue = self.queue
        if queue.empty():
            try:
                async with asyncio.timeout(_IDLE):
                    first = await queue.get()
            except TimeoutError:
                return ()
        else:
            first = queue.get_nowait()
        msgs = [first]
        while len(msgs) < limit and not queue.empty():
            msgs.append(queue.get_nowait())
        return [plain_message(m, reply_to=m.reply or None) for m in msgs if not is_status(m)]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.forget(self)
        with contextlib.suppress(Exception):
            await self._stop_source()
        with contextlib.suppress(Exception):
            await self._hand_back()

    async def _stop_source(self) -> None:
        if self.sub is not None:
            sub, self.sub = self.sub, None
            await sub.unsubscribe()

    async def _hand_back(self) -> None:
        """At close: hand back what is unsettled (core NATS cannot: at-most-once)."""


class JetStreamSubscription(NatsSubscription):
    """A JetStream consumer: push (fed by its deliver subject) or pull (fed by the pull
    requests ``fetch`` sends).

    Either way the messages arrive in a buffer, and a fetch returns what is there as soon
    as something is: a pull request asks for up to a batch, and stays open on the server
    for the rest while the core handles what came. (nats-py's ``fetch`` waits until the
    batch is full or the request expires: when the consumer's ``max_ack_pending`` is shared
    by several replicas, each held a part of it and waited for the rest, which came only
    when the server redelivered the others' after ``ack_wait``.)"""

    def __init__(self, transport: NatsTransport, spec: SubscriptionSpec) -> None:
        super().__init__(transport, spec)
        options = spec.options
        stream: str | JStream | None = options.get("stream") or transport.stream
        assert stream is not None
        self.stream_option = stream
        self.stream = stream_name(stream) or ""
        durable = options.get("durable")
        if not durable and spec.group:
            durable = re.sub(r"[^A-Za-z0-9_-]", "_", f"{spec.group}_{self.subject}")
        pull = options.get("pull")
        self.pull = pull if isinstance(pull, PullSub) else PullSub() if pull else None
        #: Delivered and not settled yet, buffered or in the core's hands (a dict keeps
        #: their order): kept in progress, handed back at close.
        self.unsettled: dict[StreamMessage, None] = {}
        #: Delivered, not fetched yet.
        self.buffer: deque[NatsMessage] = deque()
        self._arrived = asyncio.Event()
        # The open pull request: how many messages it may still bring, until when, and
        # why the server ended the last one, when it refused it.
        self._asked = 0
        self._asked_until = 0.0
        self._refused: str | None = None
        self._next = ""  # the subject pull requests go to
        self._inbox = ""  # where their messages come
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
        #: The consumer's name on the server (an ephemeral push consumer's is its own).
        self.name = self.config.name
        if self.pull is None:
            self.config.deliver_subject = transport.client.new_inbox()
            if durable:
                # All instances of a durable push consumer share its deliver subject and
                # group, so they compete for its messages.
                self.config.deliver_group = spec.group or durable

    async def _consumer(self, *, again: bool = False) -> api.ConsumerInfo:
        """The consumer's info, created (and its stream declared) when missing; ``again``
        (set up before) declares the stream only then, not to undo changes made since."""
        transport = self.transport
        if not again:
            await transport.ensure_stream(self.stream_option)
        jsm = transport.jsm
        if self.name:
            try:
                info: api.ConsumerInfo = await jsm.consumer_info(self.stream, self.name)
            except NotFoundError:
                pass
            else:
                if (info.config.deliver_subject is None) != (self.pull is not None):
                    raise ConfigurationError(
                        f"JetStream consumer {self.name!r} on stream {self.stream!r} is a "
                        f"{'pull' if self.pull is None else 'push'} consumer; "
                        "use another durable name or change pull="
                    )
                return info
        if again:
            logger.warning("%r: consumer %r is gone; creating it again", self, self.name)
            await transport.ensure_stream(self.stream_option)
        info = await jsm.add_consumer(self.stream, self.config)
        self.name = info.name
        return info

    async def open(self) -> None:
        info = await self._consumer()
        self.keepalive_interval = (info.config.ack_wait or _ACK_WAIT) / 3
        if self.pull is not None:
            self._next = f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{info.name}"
            self._inbox = self.transport.client.new_inbox()
            await self._subscribe(self._inbox, None)
            return
        # An existing durable keeps its deliver subject and group: join them.
        self.config.deliver_subject = info.config.deliver_subject
        self.config.deliver_group = info.config.deliver_group
        assert info.config.deliver_subject is not None
        await self._subscribe(info.config.deliver_subject, info.config.deliver_group)

    async def reopen(self) -> None:
        # The subscription (to the deliver subject, or for pull replies) outlives a
        # reconnect; the stream, the consumer and an open pull request may not.
        self._asked, self._refused = 0, None
        await self._consumer(again=True)

    async def _receive(self, msg: Msg) -> None:
        if is_status(msg):
            status = msg.headers.get("Status") if msg.headers else None
            if self.pull is not None and status != _HEARTBEAT:
                # The pull request is over: expired (408), or refused (409: the consumer
                # deleted, too many waiting requests...).
                self._asked = 0
                if status not in _REQUEST_OVER:
                    assert msg.headers is not None
                    self._refused = f"{status} {msg.headers.get('Description', '')}".strip()
                self._arrived.set()
            return
        try:
            message = NatsMessage(msg)
        except Exception:
            logger.warning("%r: ignored a message that is no JetStream delivery", self)
            return
        self.unsettled[message] = None
        self.buffer.append(message)
        self._asked -= 1
        self._arrived.set()

    async def _take(self, limit: int) -> Sequence[StreamMessage]:
        if self.pull is None:
            # Half the consumer's window (max_ack_pending, the prefetch) at a time: the
            # server sends the next messages while the core handles these.
            limit, wait = max(limit // 2, 1), _IDLE
        else:
            # One pull request open at a time; after a reconnect the next fetch asks
            # again, so consuming resumes where nats.py#504 stalls.
            if self._asked <= 0 or time.monotonic() >= self._asked_until:
                await self._ask(min(self.pull.batch_size or limit, limit))
            wait = min(self._asked_until - time.monotonic(), self.pull.timeout)
        buffer = self.buffer
        if not buffer:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._arrived.wait()
        if not buffer and self._refused is not None:
            refused, self._refused = self._refused, None
            raise TransportError(f"JetStream refused the pull request: {refused}")
        return [buffer.popleft() for _ in range(min(limit, len(buffer)))]

    async def _ask(self, batch: int) -> None:
        """Send a pull request for up to ``batch`` messages, open for the pull timeout."""
        assert self.pull is not None
        timeout = self.pull.timeout
        request = {"batch": batch, "expires": int(timeout * 1e9)}
        await self.transport.client.publish(
            self._next, json.dumps(request).encode(), reply=self._inbox
        )
        # Ended by the server's 408 at expiry; the grace covers a 408 never received.
        self._asked, self._asked_until = batch, time.monotonic() + timeout + _GRACE

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        # Each ack is a publish to the message's reply subject: written to the client's
        # buffer and flushed together, no round trip awaited.
        await self._reply(acked, _ACK, "acknowledging")
        await self._reply(rejected, _TERM, "terminating")

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        await self._reply(messages, _NAK, "handing messages back")

    async def keepalive(self) -> None:
        """Every third of the ack wait: what this subscriber holds (buffered, in a handler,
        or for a retry's backoff) is in progress, so JetStream does not deliver it again
        meanwhile."""
        await self._reply(list(self.unsettled), _WPI, "holding messages", settles=False)

    async def _reply(
        self, messages: Sequence[StreamMessage], payload: bytes, doing: str, settles: bool = True
    ) -> None:
        if not messages:
            return
        unsettled = self.unsettled
        try:
            publish = self.transport.client.publish
            for message in messages:
                await publish(message.raw_message.reply, payload)
                if settles:
                    unsettled.pop(message, None)
        except Exception as exc:
            raise nats_error(exc, doing) from None

    async def _hand_back(self) -> None:
        """Unsettled (buffered, fetched, or waiting for a delayed redelivery): back to
        JetStream now, instead of after its ack wait."""
        self.buffer.clear()
        await self._reply(list(self.unsettled), _NAK, "handing messages back")
        async with asyncio.timeout(self.transport.publish_timeout):
            await self.transport.client.flush()


class KvSubscription(NatsSubscription):
    """A key-value watch: each change of a matching key is a message on channel ``key``."""

    def __init__(self, transport: NatsTransport, spec: SubscriptionSpec) -> None:
        super().__init__(transport, spec)
        watch = spec.options["kv_watch"]
        self.watch = watch if isinstance(watch, KvWatch) else KvWatch(str(watch))
        self.watcher: Any = None  # KeyValue.KeyWatcher, untyped in nats-py

    async def open(self) -> None:
        kv = await self.transport.key_value(self.watch.bucket, declare=self.watch.declare)
        self.watcher = await kv.watch(
            self.subject,
            include_history=self.watch.include_history,
            ignore_deletes=self.watch.ignore_deletes,
        )

    async def _take(self, limit: int) -> Sequence[StreamMessage]:
        assert self.watcher is not None
        try:
            entry = await self.watcher.updates(timeout=_IDLE)
        except TimeoutError:
            return ()
        if not isinstance(entry, KeyValue.Entry):
            return ()  # the end of the initial values
        return (kv_message(entry),)

    async def _stop_source(self) -> None:
        if self.watcher is not None:
            watcher, self.watcher = self.watcher, None
            await watcher.stop()
