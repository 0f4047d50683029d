"""What a Redis subscriber fetches and settles: pub/sub channels, lists and streams.

The core's consume loop drives these (see ``docs/transports.md``); each says only how
Redis does it:

* ``pubsub``: SUBSCRIBE / PSUBSCRIBE, at-most-once (nothing to settle or redeliver);
* ``list``: a work queue; reliable mode moves items to a processing list of this consumer
  (LMOVE) until they are settled, and moves back the items of consumers that died;
* ``stream``: XREADGROUP / XACK in a consumer group; entries pending with a consumer that
  died are claimed with XAUTOCLAIM, and delivery counts come from the PEL.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from fastapi_stream.core.message import StreamMessage
from fastapi_stream.core.transport import Subscription, SubscriptionSpec
from fastapi_stream.redis.options import ListSub, StreamSub
from fastapi_stream.redis.routing import redis_glob, stream_group
from fastapi_stream.redis.wire import entry_message

if TYPE_CHECKING:
    from fastapi_stream.redis.transport import RedisTransport

__all__ = ["ListSubscription", "PubSubscription", "StreamSubscription"]

log = logging.getLogger("fastapi_stream.redis")

#: The longest a fetch blocks in Redis, so that stop and redeliveries are never far off.
_BLOCK = 1.0

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
# Items ARGV (in order) back to the head of list KEYS[2], those still in KEYS[1].
_REQUEUE = """
for i = #ARGV, 1, -1 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) > 0 then redis.call('LPUSH', KEYS[2], ARGV[i]) end
end
"""


class PubSubscription(Subscription):
    """A pub/sub channel or glob pattern: every subscriber gets every message."""

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec) -> None:
        self.transport = transport
        self.name = spec.channel.template
        self.glob = redis_glob(spec)
        self.filter = spec.channel if spec.channel.is_pattern else None
        self.pubsub: Any = None

    async def open(self) -> None:
        """Subscribe, and return once Redis confirmed it: a publish right after arrives."""
        await self.close()
        self.pubsub = pubsub = self.transport.client.pubsub()
        if self.glob is not None:
            await pubsub.psubscribe(self.glob)
        else:
            await pubsub.subscribe(self.name)
        while True:
            reply = await pubsub.get_message(timeout=_BLOCK)
            if reply is not None and reply["type"] in ("subscribe", "psubscribe"):
                return

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        if self.pubsub is None:
            await self.open()
        messages: list[StreamMessage] = []
        try:
            reply = await self.pubsub.get_message(timeout=_BLOCK)
            while reply is not None:
                if reply["type"] in ("message", "pmessage"):
                    channel = reply["channel"].decode()
                    if self.filter is None or self.filter.match(channel) is not None:
                        messages.append(self.transport.unpacked(reply["data"], channel, reply))
                if len(messages) >= limit:
                    break
                reply = await self.pubsub.get_message(timeout=0)
        except Exception:
            await self.close()  # subscribe again on a new connection at the next fetch
            raise
        return messages

    async def close(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()


class ListSubscription(Subscription):
    """A list as a work queue. Reliable mode keeps taken items in a processing list of
    this consumer, next to a liveness key it refreshes; the others move the items of a
    consumer whose liveness key expired back to the list."""

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec) -> None:
        self.transport = transport
        self.client = client = transport.client
        self.name = spec.channel.template
        settings = spec.options.get("list")
        settings = settings if isinstance(settings, ListSub) else ListSub(self.name)
        self.reliable = settings.reliable
        self.idle = settings.min_idle_time or transport.min_idle_time
        self.consumer = transport.consumer_name()
        self.members = f"{self.name}:consumers"
        self.processing = self.processing_key(self.consumer)
        self.keepalive_interval = self.idle / 3 if self.reliable else None
        #: Items handed out and not settled or handed back (close() pushes them back when
        #: the list is not reliable).
        self.held: Counter[bytes] = Counter()
        #: A take failed: it may have moved items whose reply never came (a cut connection,
        #: a timeout), which would wait in this live consumer's processing list forever.
        self.unsure = False
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self._requeue = client.register_script(_REQUEUE)

    def processing_key(self, consumer: str) -> str:
        return f"{self.name}:processing:{consumer}"

    def alive_key(self, consumer: str) -> str:
        return f"{self.name}:alive:{consumer}"

    async def open(self) -> None:
        if self.reliable:
            await self.keepalive()

    async def keepalive(self) -> None:
        """Say this consumer is alive; move back the items of consumers that are not."""
        client = self.client
        await client.set(self.alive_key(self.consumer), 1, px=int(self.idle * 1000))
        await client.sadd(self.members, self.consumer)
        for member in await client.smembers(self.members):
            consumer = member.decode() if isinstance(member, bytes) else member
            if consumer == self.consumer or await client.exists(self.alive_key(consumer)):
                continue
            moved = await self._release(keys=[self.processing_key(consumer), self.name])
            await client.srem(self.members, consumer)
            if moved:
                log.warning(
                    "redis list %r: consumer %s stopped answering; %d item(s) it held are "
                    "queued again",
                    self.name,
                    consumer,
                    moved,
                )

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        if self.unsure:
            await self._reclaim()
        try:
            items = await self._fetch(limit)
        except BaseException:
            # Cancelled too: the core's fetch timeout cancels a take whose reply never
            # came (a silent connection), after Redis may have moved items.
            self.unsure = self.reliable
            raise
        self.held.update(items)
        return [self.transport.unpacked(raw, self.name, raw) for raw in items]

    async def _fetch(self, limit: int) -> list[Any]:
        client = self.client
        if self.reliable:
            items: list[Any] = await self._take(keys=[self.name, self.processing], args=[limit])
            if not items:
                seconds: Any = _BLOCK  # Redis takes fractions; redis-py's hint says int
                item = await client.blmove(self.name, self.processing, seconds, "LEFT", "RIGHT")
                items = [item] if item is not None else []
            return items
        popped: Any = await client.lpop(self.name, limit)
        if popped:
            return list(popped)
        waited = await client.blpop([self.name], _BLOCK)
        return [waited[1]] if waited else []

    async def _reclaim(self) -> None:
        """Items in this consumer's processing list that were never handed out go back
        to the head of the list, in order."""
        found: Counter[Any] = Counter(await self.client.lrange(self.processing, 0, -1))
        strays = list((found - self.held).elements())
        if strays:
            await self._requeue(keys=[self.processing, self.name], args=strays)
            log.warning(
                "redis list %r: %d item(s) taken by a fetch whose reply was lost are queued again",
                self.name,
                len(strays),
            )
        self.unsure = False

    def _forget(self, messages: Sequence[StreamMessage]) -> None:
        self.held -= Counter(message.raw_message for message in messages)

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        settled = (*acked, *rejected)
        if self.reliable:
            async with self.client.pipeline(transaction=False) as pipe:
                for message in settled:
                    pipe.lrem(self.processing, 1, message.raw_message)
                await self.transport.settling(pipe.execute())
        self._forget(settled)

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        raws = [message.raw_message for message in messages]
        command: Awaitable[Any]
        if self.reliable:
            command = self._requeue(keys=[self.processing, self.name], args=raws)
        else:
            command = self.client.lpush(self.name, *reversed(raws))
        await self.transport.settling(command)
        self._forget(messages)

    async def close(self) -> None:
        try:
            async with self.transport.bounded():
                if self.reliable:
                    await self._release(keys=[self.processing, self.name])
                    await self.client.srem(self.members, self.consumer)
                    await self.client.delete(self.alive_key(self.consumer))
                elif self.held:
                    await self.client.lpush(self.name, *reversed(list(self.held.elements())))
            self.held.clear()
        except Exception as exc:
            log.warning("redis list %r: could not hand back unsettled items: %s", self.name, exc)


class StreamSubscription(Subscription):
    """A consumer in a stream's consumer group. Its unsettled entries are kept fresh in
    the PEL, so only the entries of consumers that died (or closed) are claimed."""

    def __init__(self, transport: RedisTransport, spec: SubscriptionSpec) -> None:
        self.transport = transport
        self.client = transport.client
        self.name = spec.channel.template
        settings = spec.options.get("stream")
        settings = settings if isinstance(settings, StreamSub) else StreamSub(self.name)
        group = stream_group(spec)
        self.private = group is None
        self.group = group or f"fastapi-stream.private.{uuid.uuid4().hex}"
        self.consumer = settings.consumer or transport.consumer_name()
        self.last_id = settings.last_id
        self.idle = settings.min_idle_time or transport.min_idle_time
        self.keepalive_interval = self.idle / 3
        #: Entries fetched and not settled: kept fresh by keepalive(), released at close.
        self.unsettled: set[bytes] = set()
        #: Entries claimed back for another delivery, handed out by the next fetch.
        self.again: deque[StreamMessage] = deque()
        self.next_claim = 0.0
        self.claim_cursor: bytes | str = "0-0"

    async def open(self) -> None:
        await self._create_group(self.last_id)

    async def _create_group(self, start: str) -> None:
        try:
            await self.client.xgroup_create(self.name, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        if self.again:
            return [self.again.popleft() for _ in range(min(limit, len(self.again)))]
        try:
            return await self._fetch(limit)
        except ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                # The stream or the group was deleted (or Redis restarted empty): create
                # it again from the start, so entries added since are not skipped.
                await self._create_group("0")
            raise

    async def _fetch(self, limit: int) -> list[StreamMessage]:
        client = self.client
        if time.monotonic() >= self.next_claim:
            self.next_claim = time.monotonic() + self.idle / 2
            cursor, entries, *_ = await client.xautoclaim(
                self.name,
                self.group,
                self.consumer,
                int(self.idle * 1000),
                self.claim_cursor,
                count=limit,
            )
            self.claim_cursor = cursor
            if cursor not in (b"0-0", "0-0"):
                self.next_claim = 0.0  # more to claim: go on at once
            if entries:
                return await self._entries(entries, counted=False)
        block = min(_BLOCK, max(0.0, self.next_claim - time.monotonic()))
        response: Any = await client.xreadgroup(
            self.group,
            self.consumer,
            {self.name: ">"},
            count=limit,
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
            attempt = 1 if counted else attempts.get(entry_id)
            message = entry_message(self.name, entry_id, fields, attempt)
            self.transport.expect_reply(message.reply_to)
            messages.append(message)
            self.unsettled.add(entry_id)
        return messages

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        ids = [message.raw_message[0] for message in (*acked, *rejected)]
        await self.transport.settling(self.client.xack(self.name, self.group, *ids))
        self.unsettled.difference_update(ids)

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        """Claim the entries again (which counts a delivery in the PEL) and hand them out
        at the next fetch. Until that succeeds they stay pending, kept fresh."""
        ids = [message.raw_message[0] for message in messages]
        entries = await self.transport.settling(
            self.client.xclaim(self.name, self.group, self.consumer, 0, ids)
        )
        self.unsettled.difference_update(ids)  # what is still there is added again
        self.again.extend(await self._entries(entries, counted=False))

    async def keepalive(self) -> None:
        """Reset the idle time of this consumer's unsettled entries (still in work, or
        waiting for a redelivery), so no other consumer claims them."""
        if self.unsettled:
            await self.client.xclaim(
                self.name, self.group, self.consumer, 0, list(self.unsettled), justid=True
            )

    async def close(self) -> None:
        try:
            async with self.transport.bounded():
                await self._release()
        except Exception as exc:
            log.warning(
                "redis stream %r: could not hand back unsettled entries: %s", self.name, exc
            )

    async def _release(self) -> None:
        client = self.client
        if self.private:
            await client.xgroup_destroy(self.name, self.group)
            return
        pending = await client.xpending_range(
            self.name, self.group, "-", "+", 10_000, consumername=self.consumer
        )
        if pending:
            # Idle "forever": the next claim pass of any consumer takes them at once.
            ids: list[Any] = [p["message_id"] for p in pending]
            await client.xclaim(
                self.name, self.group, self.consumer, 0, ids, idle=2**40, justid=True
            )
        else:
            await client.xgroup_delconsumer(self.name, self.group, self.consumer)
