"""``redis://`` and ``rediss://``: pub/sub channels, lists and streams on redis-py asyncio.

The only module of fastapi_stream that imports redis-py. Three kinds of subscription:

* ``channel``: SUBSCRIBE / PSUBSCRIBE, at-most-once (nack and reject do nothing);
* ``list``: a work queue; reliable mode moves items to a per-consumer processing list
  (LMOVE) until they are settled, and moves back the items of dead consumers;
* ``stream``: XREADGROUP / XACK in a consumer group; entries pending with an idle
  consumer are claimed with XAUTOCLAIM, and their delivery count comes from the PEL.

Every consume loop survives Redis restarts and deleted streams or groups (NOGROUP: the
group is created again) with a bounded backoff and one log line per backoff step.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from fastapi_stream.core import outbox
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.codec import JSON
from fastapi_stream.core.errors import (
    BrokerNotConnected,
    PublishError,
    TransportError,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import Deliver, Subscription, SubscriptionSpec, Transport
from fastapi_stream.core.url import redact
from fastapi_stream.redis.options import KINDS, Kind, ListSub, PubSub, StreamSub
from fastapi_stream.redis.routing import RedisRouting, redis_glob, stream_group

__all__ = ["ENVELOPE_PREFIX", "RedisTransport", "decode_value", "encode_value"]

log = logging.getLogger("fastapi_stream.redis")

#: A list item or pub/sub message in fastapi_stream's envelope starts with this line,
#: then one line of JSON metadata, then the body as it is (see docs/redis.md).
ENVELOPE_PREFIX = b"fstream:1\n"
_META_KEYS = ("message_id", "correlation_id", "reply_to", "content_type")
_FIRST_BACKOFF, _MAX_BACKOFF = 0.1, 5.0
_SETUP_TIMEOUT = 5.0
_FETCH_TIMEOUT = 30.0  # a fetch blocks for at most a second: a dead connection hangs longer
#: When a delivery's results could not be published, its messages are handled again after:
_RESULTS_RETRY_DELAY = 1.0
_REMEMBERED_REPLIES = 10_000

# Reliable lists: take up to ARGV[1] items into the processing list, oldest first.
_TAKE = """
local items = {}
for i = 1, tonumber(ARGV[1]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not item then break end
  items[i] = item
end
return items
"""
# Everything in processing list KEYS[1] back to the head of KEYS[2], in order.
_RELEASE = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
"""
# A nacked item back to the head of the list, if it is still ours.
_RETRY = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then redis.call('LPUSH', KEYS[2], ARGV[1]) end
"""


# -- the envelope ------------------------------------------------------------------------


def encode_value(message: OutgoingMessage) -> bytes:
    """A list item or pub/sub payload: the envelope line, metadata JSON, then the body."""
    meta: dict[str, Any] = {key: getattr(message, key) for key in _META_KEYS}
    meta = {key: value for key, value in meta.items() if value}
    if message.headers:
        meta["headers"] = message.headers
    return ENVELOPE_PREFIX + json.dumps(meta, separators=(",", ":")).encode() + b"\n" + message.body


def decode_value(raw: bytes) -> tuple[bytes, dict[str, Any]]:
    """``(body, metadata)`` of a list item or pub/sub payload; a value without the
    envelope (another producer's plain JSON, say) is all body."""
    if raw.startswith(ENVELOPE_PREFIX):
        end = raw.find(b"\n", len(ENVELOPE_PREFIX))
        if end != -1:
            try:
                meta = json.loads(raw[len(ENVELOPE_PREFIX) : end])
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                return raw[end + 1 :], meta
    return raw, {}


def stream_fields(message: OutgoingMessage) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"body": message.body}
    for key in _META_KEYS:
        value = getattr(message, key)
        if value:
            fields[key] = value
    if message.headers:
        fields["headers"] = json.dumps(message.headers, separators=(",", ":"))
    return fields


def decode_fields(fields: Mapping[bytes, bytes]) -> tuple[bytes, dict[str, Any]]:
    """``(body, metadata)`` of a stream entry. An entry without a ``body`` field (another
    producer's) becomes a JSON object of its fields."""
    if b"body" not in fields:
        plain = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        return json.dumps(plain).encode(), {"content_type": JSON}
    meta: dict[str, Any] = {}
    for key in _META_KEYS:
        value = fields.get(key.encode())
        if value:
            meta[key] = value.decode(errors="replace")
    headers = fields.get(b"headers")
    if headers:
        with contextlib.suppress(ValueError):
            meta["headers"] = json.loads(headers)
    return fields[b"body"], meta


_M = TypeVar("_M", bound=StreamMessage)


def _message(
    cls: type[_M],
    body: bytes,
    meta: Mapping[str, Any],
    channel: str,
    raw: Any,
    *,
    message_id: str | None = None,
    attempt: int | None = None,
) -> _M:
    headers = meta.get("headers")
    return cls(
        body,
        channel=channel,
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        message_id=_text(meta.get("message_id")) or message_id,
        correlation_id=_text(meta.get("correlation_id")),
        reply_to=_text(meta.get("reply_to")),
        content_type=_text(meta.get("content_type")),
        delivery_attempt=attempt,
        raw_message=raw,
    )


def _text(value: Any) -> str | None:
    return str(value) if value else None


# -- consumers ---------------------------------------------------------------------------


class _Backoff:
    """Waits between failed attempts, doubling up to a cap; one log line per step."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.delay = 0.0

    async def failed(self, exc: BaseException) -> None:
        self.delay = min(self.delay * 2, _MAX_BACKOFF) if self.delay else _FIRST_BACKOFF
        log.warning(
            "%s failed (%s: %s); retrying in %.1fs", self.what, type(exc).__name__, exc, self.delay
        )
        await asyncio.sleep(self.delay)

    def succeeded(self) -> None:
        if self.delay:
            log.info("%s recovered", self.what)
            self.delay = 0.0


class _Consumer(Subscription):
    """A fetch loop that hands what it fetched to ``deliver``, plus an optional
    keepalive loop. ``stop()`` interrupts a fetch, never a delivery; ``close()`` (when
    the transport closes, after the core drained) hands unsettled messages back."""

    kind = "pubsub"
    keepalive_interval: float | None = None

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec, deliver: Deliver):
        self.transport = transport
        self.client = transport.client
        self.spec = spec
        self.name = spec.channel.template
        self.deliver = deliver
        self.prefetch = max(1, spec.prefetch)
        self.backoff = _Backoff(f"redis {self.kind} {self.name!r}")
        self.stopped = False
        self.fetching = False
        self.tasks: list[asyncio.Task[None]] = []
        self.retries: list[tuple[float, int, Any]] = []  # (due, tiebreak, what) heap
        self._order = itertools.count()
        # A sequential subscriber has handled the whole delivery when `deliver` returns:
        # its acks go to Redis then, together. Concurrent workers ack one by one.
        self.batched_acks = spec.max_workers == 1
        self.acked: list[Any] = []

    async def start(self) -> None:
        async with asyncio.timeout(_SETUP_TIMEOUT):
            await self.setup()
        self.tasks.append(asyncio.create_task(self._run(), name=f"redis-fetch:{self.name}"))
        if self.keepalive_interval is not None:
            self.tasks.append(asyncio.create_task(self._keepalive(self.keepalive_interval)))

    async def setup(self) -> None:
        return None

    async def fetch(self) -> Sequence[StreamMessage]:
        raise NotImplementedError

    async def keepalive(self) -> None:
        return None

    async def release(self) -> None:
        return None

    async def flush(self) -> None:
        """Send the acks buffered while a delivery was handled (one round trip for all)."""
        return None

    async def _flush(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            # Unacknowledged means redelivered: at-least-once holds, nothing is lost.
            log.warning("redis %r: acks not sent, they will be redelivered: %s", self.name, exc)

    async def _run(self) -> None:
        while not self.stopped:
            self.fetching = True
            try:
                async with asyncio.timeout(_FETCH_TIMEOUT):
                    messages = await self.fetch()
                self.backoff.succeeded()
            except Exception as exc:
                await self.recover(exc)
                continue
            finally:
                self.fetching = False
            if messages and not self.stopped:
                await self._handle(messages)

    async def _handle(self, messages: Sequence[StreamMessage]) -> None:
        """Deliver ``messages``, then send the results the handlers returned (together, see
        core/outbox.py) and after them the acks."""
        if not self.batched_acks:
            await self._deliver(messages)
            await self._flush()
            return
        with outbox.collecting(self.transport) as results:
            await self._deliver(messages)
        if results:
            try:
                await self.transport.send_results(results)
            except PublishError as exc:
                acked, self.acked = self.acked, []
                log.warning(
                    "redis %r: %s; the %d message(s) they answer are handled again in %.0fs",
                    self.name,
                    exc,
                    len(acked),
                    _RESULTS_RETRY_DELAY,
                )
                self.unack(acked)
                return
        await self._flush()

    async def _deliver(self, messages: Sequence[StreamMessage]) -> None:
        try:
            await self.deliver(messages)
        except Exception:
            log.exception("delivering from redis %r failed", self.name)

    def unack(self, refs: Sequence[Any]) -> None:
        """Take back acks that were not sent: handle those messages again later."""
        for ref in refs:
            self.retry_later(_RESULTS_RETRY_DELAY, ref)

    async def recover(self, exc: Exception) -> None:
        await self.backoff.failed(exc)

    async def _keepalive(self, interval: float) -> None:
        backoff = _Backoff(f"redis keepalive of {self.name!r}")
        while True:
            try:
                async with asyncio.timeout(_SETUP_TIMEOUT):
                    await self.keepalive()
                backoff.succeeded()
            except Exception as exc:
                await backoff.failed(exc)
                continue
            await asyncio.sleep(interval)

    def retry_later(self, delay: float, what: Any) -> None:
        heapq.heappush(self.retries, (time.monotonic() + delay, next(self._order), what))

    def due_retries(self) -> list[Any]:
        now, due = time.monotonic(), []
        while self.retries and self.retries[0][0] <= now:
            due.append(heapq.heappop(self.retries)[2])
        return due

    def wait_limit(self, longest: float) -> float:
        """How long a fetch may block: until the next retry is due, at most ``longest``."""
        if not self.retries:
            return longest
        return max(0.0, min(longest, self.retries[0][0] - time.monotonic()))

    async def stop(self) -> None:
        self.stopped = True
        if self.tasks and self.fetching:
            fetch = self.tasks[0]
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)

    async def close(self) -> None:
        self.stopped = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._flush()
        try:
            async with asyncio.timeout(_SETUP_TIMEOUT):
                await self.release()
        except Exception as exc:
            log.warning("redis %r: could not hand back unsettled messages: %s", self.name, exc)


class _Delivery(StreamMessage):
    """A list item or a stream entry: its consumer settles it by ``ref`` (the item, or
    the entry id). A rejected message is dropped like an acked one: the core has
    dead-lettered it already where configured."""

    __slots__ = ("_consumer", "_ref")
    _consumer: _ListConsumer | _StreamConsumer
    _ref: Any

    async def _ack(self) -> None:
        await self._consumer.ack(self._ref)

    async def _reject(self) -> None:
        await self._consumer.ack(self._ref)

    async def _nack(self, delay: float) -> None:
        await self._consumer.nack(self._ref, delay)


class _ChannelConsumer(_Consumer):
    """Pub/sub: every subscriber gets every message; nothing to settle."""

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec, deliver: Deliver):
        super().__init__(transport, spec, deliver)
        self.glob = redis_glob(spec)
        self.filter = spec.channel if spec.channel.is_pattern else None
        self.pubsub: Any = None

    async def setup(self) -> None:
        await self._close_pubsub()
        self.pubsub = pubsub = self.client.pubsub()
        if self.glob is not None:
            await pubsub.psubscribe(self.glob)
        else:
            await pubsub.subscribe(self.name)
        # Subscribed only once Redis confirmed it: a publish right after must arrive.
        while True:
            reply = await pubsub.get_message(timeout=1.0)
            if reply is not None and reply["type"] in ("subscribe", "psubscribe"):
                return

    async def fetch(self) -> Sequence[StreamMessage]:
        if self.pubsub is None:
            async with asyncio.timeout(_SETUP_TIMEOUT):
                await self.setup()
        messages: list[StreamMessage] = []
        reply = await self.pubsub.get_message(timeout=1.0)
        while reply is not None:
            if reply["type"] in ("message", "pmessage"):
                channel = reply["channel"].decode()
                if self.filter is None or self.filter.match(channel) is not None:
                    body, meta = decode_value(reply["data"])
                    messages.append(_message(StreamMessage, body, meta, channel, reply))
                    self.transport.expect_reply(meta.get("reply_to"))
            if len(messages) >= self.prefetch:
                break
            reply = await self.pubsub.get_message(timeout=0)
        return messages

    async def recover(self, exc: Exception) -> None:
        await self._close_pubsub()  # subscribe again on a new connection after the wait
        await super().recover(exc)

    async def _close_pubsub(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def release(self) -> None:
        await self._close_pubsub()


class _ListConsumer(_Consumer):
    """A list as a work queue. Reliable mode keeps taken items in a processing list of
    this consumer, next to a liveness key it refreshes; the others move the items of a
    consumer whose liveness key expired back to the list."""

    kind = "list"

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec, deliver: Deliver):
        super().__init__(transport, spec, deliver)
        settings = spec.options.get("list")
        settings = settings if isinstance(settings, ListSub) else ListSub(self.name)
        self.reliable = settings.reliable
        self.idle = settings.min_idle_time or transport.min_idle_time
        self.consumer = transport.consumer_name()
        self.members = f"{self.name}:consumers"
        self.processing = self.processing_key(self.consumer)
        if self.reliable:
            self.keepalive_interval = self.idle / 3
        self._take = self.client.register_script(_TAKE)
        self._release = self.client.register_script(_RELEASE)
        self._retry = self.client.register_script(_RETRY)

    def processing_key(self, consumer: str) -> str:
        return f"{self.name}:processing:{consumer}"

    def alive_key(self, consumer: str) -> str:
        return f"{self.name}:alive:{consumer}"

    async def setup(self) -> None:
        if self.reliable:
            await self.keepalive()

    async def keepalive(self) -> None:
        """Say this consumer is alive; move back the items of consumers that are not."""
        await self.client.set(self.alive_key(self.consumer), 1, px=int(self.idle * 1000))
        await self.client.sadd(self.members, self.consumer)
        for member in await self.client.smembers(self.members):
            consumer = member.decode() if isinstance(member, bytes) else member
            if consumer == self.consumer or await self.client.exists(self.alive_key(consumer)):
                continue
            moved = await self._release(keys=[self.processing_key(consumer), self.name])
            await self.client.srem(self.members, consumer)
            if moved:
                log.warning(
                    "redis list %r: consumer %s stopped answering; %d item(s) it held are "
                    "queued again",
                    self.name,
                    consumer,
                    moved,
                )

    async def fetch(self) -> Sequence[StreamMessage]:
        for raw in self.due_retries():
            await self._requeue(raw)
        if self.reliable:
            items = await self._take(keys=[self.name, self.processing], args=[self.prefetch])
        else:
            items = await self.client.lpop(self.name, self.prefetch) or []
        if not items:
            block = self.wait_limit(1.0)
            if block >= 0.01:
                if self.reliable:
                    seconds: Any = block  # Redis takes fractions; redis-py's hint says int
                    item = await self.client.blmove(
                        self.name, self.processing, seconds, "LEFT", "RIGHT"
                    )
                    items = [item] if item is not None else []
                else:
                    popped = await self.client.blpop([self.name], block)
                    items = [popped[1]] if popped else []
        return [self._item(raw) for raw in items]

    def _item(self, raw: bytes) -> StreamMessage:
        body, meta = decode_value(raw)
        self.transport.expect_reply(meta.get("reply_to"))
        item = _message(_Delivery, body, meta, self.name, raw)
        item._consumer, item._ref = self, raw
        return item

    async def ack(self, raw: Any) -> None:
        if not self.reliable:
            return
        if self.batched_acks:
            self.acked.append(raw)
        else:
            await self.transport.settle(self.client.lrem(self.processing, 1, raw))

    async def flush(self) -> None:
        if self.acked:
            acked, self.acked = self.acked, []
            pipe = self.client.pipeline(transaction=False)
            for raw in acked:
                pipe.lrem(self.processing, 1, raw)
            await self.transport.settle(pipe.execute())

    async def nack(self, raw: bytes, delay: float) -> None:
        if delay > 0:
            self.retry_later(delay, raw)  # stays in the processing list meanwhile
        else:
            await self.transport.settle(self._requeue(raw))

    async def _requeue(self, raw: bytes) -> None:
        if self.reliable:
            await self._retry(keys=[self.processing, self.name], args=[raw])
        else:
            await self.client.lpush(self.name, raw)

    async def release(self) -> None:
        if not self.reliable:
            for raw in self.due_retries() + [what for _, _, what in self.retries]:
                await self.client.lpush(self.name, raw)
            return
        await self._release(keys=[self.processing, self.name])
        await self.client.srem(self.members, self.consumer)
        await self.client.delete(self.alive_key(self.consumer))


class _StreamConsumer(_Consumer):
    """A consumer in a stream's consumer group. Its unsettled entries are kept fresh in
    the PEL, so only the entries of consumers that died (or closed) are claimed."""

    kind = "stream"

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec, deliver: Deliver):
        super().__init__(transport, spec, deliver)
        settings = spec.options.get("stream")
        settings = settings if isinstance(settings, StreamSub) else StreamSub(self.name)
        group = stream_group(spec)
        self.private = group is None
        self.group = group or f"fastapi-stream.private.{uuid.uuid4().hex}"
        self.consumer = settings.consumer or transport.consumer_name()
        self.last_id = settings.last_id
        self.idle = settings.min_idle_time or transport.min_idle_time
        self.keepalive_interval = self.idle / 3
        self.unsettled: set[Any] = set()
        self.next_claim = 0.0
        self.claim_cursor: bytes | str = "0-0"

    async def setup(self) -> None:
        await self._create_group(self.last_id)

    async def _create_group(self, start: str) -> None:
        try:
            await self.client.xgroup_create(self.name, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def recover(self, exc: Exception) -> None:
        if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
            # The stream or the group was deleted (or Redis restarted empty): create it
            # again from the start, so entries added since are not skipped.
            with contextlib.suppress(Exception):
                await self._create_group("0")
        await super().recover(exc)

    async def fetch(self) -> Sequence[StreamMessage]:
        due = self.due_retries()
        if due:
            entries = await self.client.xclaim(self.name, self.group, self.consumer, 0, due)
            self.unsettled.difference_update(due)  # what is still pending is added again
            return await self._entries(entries, counted=False)
        if time.monotonic() >= self.next_claim:
            self.next_claim = time.monotonic() + self.idle / 2
            cursor, entries, *_ = await self.client.xautoclaim(
                self.name,
                self.group,
                self.consumer,
                int(self.idle * 1000),
                self.claim_cursor,
                count=self.prefetch,
            )
            self.claim_cursor = cursor
            if cursor not in (b"0-0", "0-0"):
                self.next_claim = 0.0  # more to claim: go on at once
            if entries:
                return await self._entries(entries, counted=False)
        block = self.wait_limit(min(1.0, max(0.0, self.next_claim - time.monotonic())))
        response: Any = await self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.name: ">"},
            count=self.prefetch,
            block=max(1, int(block * 1000)),
        )
        if not response:
            return []
        return await self._entries(response[0][1], counted=True)

    async def _entries(self, entries: Sequence[Any], *, counted: bool) -> list[StreamMessage]:
        """Messages for ``entries``; ``counted`` when read fresh (first delivery), else
        the delivery counts come from the PEL."""
        attempts: dict[bytes, int] = {}
        if not counted and entries:
            async with self.client.pipeline(transaction=False) as pipe:
                for entry_id, _ in entries:
                    pipe.xpending_range(self.name, self.group, entry_id, entry_id, 1)
                for found in await pipe.execute():
                    for pending in found:
                        attempts[pending["message_id"]] = pending["times_delivered"]
        messages: list[StreamMessage] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                continue
            body, meta = decode_fields(fields)
            self.transport.expect_reply(meta.get("reply_to"))
            entry = _message(
                _Delivery,
                body,
                meta,
                self.name,
                (entry_id, fields),
                message_id=entry_id.decode(),
                attempt=1 if counted else attempts.get(entry_id),
            )
            entry._consumer, entry._ref = self, entry_id
            self.unsettled.add(entry_id)
            messages.append(entry)
        return messages

    async def ack(self, entry_id: bytes) -> None:
        self.unsettled.discard(entry_id)
        if self.batched_acks:
            self.acked.append(entry_id)
        else:
            await self.transport.settle(self.client.xack(self.name, self.group, entry_id))

    async def flush(self) -> None:
        if self.acked:
            acked, self.acked = self.acked, []
            await self.transport.settle(self.client.xack(self.name, self.group, *acked))

    async def nack(self, entry_id: bytes, delay: float) -> None:
        self.retry_later(delay, entry_id)  # it stays pending, claimed again when due

    def unack(self, refs: Sequence[Any]) -> None:
        self.unsettled.update(refs)  # pending still: kept fresh until claimed again
        super().unack(refs)

    async def keepalive(self) -> None:
        """Reset the idle time of this consumer's unsettled entries (still in work, or
        waiting for a retry), so no other consumer claims them."""
        if self.unsettled:
            await self.client.xclaim(
                self.name, self.group, self.consumer, 0, list(self.unsettled), justid=True
            )

    async def release(self) -> None:
        if self.private:
            await self.client.xgroup_destroy(self.name, self.group)
            return
        pending = await self.client.xpending_range(
            self.name, self.group, "-", "+", 10_000, consumername=self.consumer
        )
        if pending:
            # Idle "forever": the next claim pass of any consumer takes them at once.
            ids: list[Any] = [p["message_id"] for p in pending]
            await self.client.xclaim(
                self.name, self.group, self.consumer, 0, ids, idle=2**40, justid=True
            )
        else:
            await self.client.xgroup_delconsumer(self.name, self.group, self.consumer)


# -- the transport -----------------------------------------------------------------------

_C = TypeVar("_C", bound=_Consumer)


def _command(client: Any, kind: Kind, message: OutgoingMessage) -> Any:
    """Queue (on a pipeline) or send (on a client) the command publishing ``message``."""
    if kind == "stream":
        maxlen = message.options.get("maxlen")
        return client.xadd(
            message.channel, stream_fields(message), maxlen=maxlen, approximate=False
        )
    if kind == "list":
        return client.rpush(message.channel, encode_value(message))
    return client.publish(message.channel, encode_value(message))


class RedisTransport(Transport):
    """A connection to Redis (``redis://host:6379/0``, ``rediss://`` for TLS).

    ``default_kind`` is what a bare name means to subscribers and publishes that choose
    no kind (``"pubsub"``, as in FastStream). ``min_idle_time`` (seconds) is
    how long a list or stream consumer may stay silent before its unsettled messages are
    given to others. ``client_name`` names the connections in ``CLIENT LIST``.
    """

    schemes = ("redis", "rediss")

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        default_kind: Kind = "pubsub",
        publish_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        min_idle_time: float = 30.0,
        client_name: str = "fastapi-stream",
    ) -> None:
        if default_kind not in KINDS:
            raise ValueError(f"default_kind must be one of {KINDS}, not {default_kind!r}")
        self.url = url
        self.default_kind: Kind = default_kind
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.min_idle_time = min_idle_time
        self.client_name = client_name
        self._routing = RedisRouting(default_kind)
        self._client: aioredis.Redis | None = None
        self._consumers: list[_Consumer] = []
        self._inbox: _ChannelConsumer | None = None
        self._inbox_lock = asyncio.Lock()
        self._requests: Replies[StreamMessage] = Replies(f"fastapi-stream.inbox.{uuid.uuid4().hex}")
        self._replies: OrderedDict[str, int] = OrderedDict()

    @classmethod
    def from_url(cls, url: str) -> RedisTransport:
        return cls(url)

    def describe(self) -> str:
        return redact(self.url)

    def routing(self) -> RedisRouting:
        return self._routing

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        return self._client

    def consumer_name(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        if self._client is not None:
            return
        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self.connect_timeout,
            # No socket timeout: redis-py would then run every send in a task of its own
            # (asyncio.wait_for). Every command here is bounded by an asyncio.timeout.
            socket_timeout=None,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
            client_name=self.client_name,
        )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await client.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            await client.aclose()
            raise TransportError(
                f"cannot connect to Redis at {self.describe()}: {type(exc).__name__}: {exc}"
            ) from None
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        consumers, self._consumers = self._consumers, []
        if self._inbox is not None:
            consumers.append(self._inbox)
            self._inbox = None
        await asyncio.gather(*(consumer.close() for consumer in consumers))
        self._requests.fail_all(BrokerNotConnected(f"{self.describe()} was closed"))
        await client.aclose()

    async def ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return bool(await self.client.ping())
        except Exception:
            return False

    # -- publishing --------------------------------------------------------------------

    def expect_reply(self, reply_to: Any) -> None:
        """Remember a delivered message's ``reply_to``: the reply to it goes over pub/sub,
        whatever the default kind (replies always travel over pub/sub)."""
        if reply_to:
            key = str(reply_to)
            self._replies[key] = self._replies.get(key, 0) + 1
            if len(self._replies) > _REMEMBERED_REPLIES:
                self._replies.popitem(last=False)

    def _publish_kind(self, message: OutgoingMessage) -> Kind:
        if not any(message.options.get(kind) for kind in KINDS):
            count = self._replies.pop(message.channel, 0)
            if count:
                if count > 1:
                    self._replies[message.channel] = count - 1
                return "pubsub"
        return self._routing.publish_kind(message)

    async def publish(self, message: OutgoingMessage) -> None:
        kind = self._publish_kind(message)
        if outbox.defer(self, (kind, message)):
            return
        try:
            async with asyncio.timeout(self.publish_timeout):
                await _command(self.client, kind, message)
        except TimeoutError:
            raise PublishError(
                f"Redis at {self.describe()} did not confirm the publish to {kind} "
                f"{message.channel!r} within {self.publish_timeout}s"
            ) from None
        except (RedisError, OSError) as exc:
            raise PublishError(
                f"publish to Redis {kind} {message.channel!r} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def send_results(self, results: Sequence[tuple[Kind, OutgoingMessage]]) -> None:
        """Publish a delivery's deferred results in one pipeline (one round trip)."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                async with self.client.pipeline(transaction=False) as pipe:
                    for kind, message in results:
                        _command(pipe, kind, message)
                    await pipe.execute()
        except TimeoutError:
            raise PublishError(
                f"Redis at {self.describe()} did not confirm {len(results)} result publish(es) "
                f"within {self.publish_timeout}s"
            ) from None
        except (RedisError, OSError) as exc:
            raise PublishError(
                f"publishing {len(results)} result(s) to Redis failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def settle(self, command: Awaitable[Any]) -> None:
        """Run an ack/nack command, bounded like a publish."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                await command
        except (TimeoutError, RedisError, OSError) as exc:
            raise TransportError(f"Redis settlement failed: {type(exc).__name__}: {exc}") from exc

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        if self._client is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        async with self._inbox_lock:
            if self._inbox is None:
                pattern = f"{self._requests.prefix}.*"
                spec = SubscriptionSpec(
                    ChannelPattern.parse(pattern), options={"pubsub": PubSub(pattern, True)}
                )
                self._inbox = await self._start(_ChannelConsumer(self, spec, self._on_replies))
        return await self._requests.request(message, timeout, self.publish)

    async def _on_replies(self, replies: Sequence[StreamMessage]) -> None:
        for reply in replies:
            self._requests.resolve(reply.channel, reply)

    # -- consuming ---------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        kind = self._routing.kind(spec)
        if kind == "pubsub" and spec.group is not None:
            log.warning(
                "redis channel %s: pub/sub has no consumer groups, so group=%r is ignored and "
                "every subscriber gets every message; use stream= for competing consumers",
                spec.channel,
                spec.group,
            )
        consumer_class: dict[Kind, type[_Consumer]] = {
            "pubsub": _ChannelConsumer,
            "list": _ListConsumer,
            "stream": _StreamConsumer,
        }
        consumer = await self._start(consumer_class[kind](self, spec, deliver))
        self._consumers.append(consumer)
        return consumer

    async def _start(self, consumer: _C) -> _C:
        """Start ``consumer``; a failure leaves nothing running."""
        try:
            await consumer.start()
        except (TimeoutError, RedisError, OSError) as exc:
            await consumer.close()
            raise TransportError(
                f"cannot subscribe to Redis {consumer.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return consumer
