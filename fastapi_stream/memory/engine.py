"""An in-process message broker: channels, consumer groups, acks and redelivery.

Every published message is copied to each *group* whose channel pattern matches it; the
consumers of a group compete for its messages. A subscriber without a group gets a
private group of its own, so it sees every message. Groups outlive their consumers, like
durable queues: a consumer that comes back gets what arrived meanwhile, and a message
left unsettled by a stopped consumer is delivered again.

In *inline* mode (the test broker) ``publish`` delivers straight to a consumer and returns
once the handlers it triggered, and those of what they published, have run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from typing import Any

from fastapi_stream.core.errors import PublishError, StreamError
from fastapi_stream.core.message import OutgoingMessage, Settlement, StreamMessage
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import (
    DEFAULT_ROUTING,
    Deliver,
    Routing,
    Subscription,
    SubscriptionSpec,
)

__all__ = ["MemoryEngine", "MemoryMessage", "MemorySubscription"]

#: A message nacked this many times in a row in inline mode is a test bug, not a retry.
_INLINE_REDELIVERY_LIMIT = 1000
_private_ids = itertools.count(1)
#: Where replies to requests go (caught by publish before any routing).
_INBOX = "_replies"


class _Signal:
    """An ``asyncio.Event`` that follows the running loop: the engine outlives event loops
    (each ``TestClient`` block runs its own), an ``Event`` may not."""

    __slots__ = ("_event", "_loop")

    def __init__(self, *, is_set: bool = False) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        if is_set:
            self._event.set()

    def _current(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            was_set = self._event.is_set()
            self._event, self._loop = asyncio.Event(), loop
            if was_set:
                self._event.set()
        return self._event

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self) -> None:
        await self._current().wait()


class _Delivery:
    """One group's copy of a published message, with its delivery count."""

    __slots__ = ("attempts", "message")

    def __init__(self, message: OutgoingMessage) -> None:
        self.message = message
        self.attempts = 0


class MemoryMessage(StreamMessage):
    """A message delivered by the memory engine; ``raw_message`` is what was published."""

    __slots__ = ("delivery",)
    delivery: _Delivery

    @classmethod
    def of_delivery(cls, delivery: _Delivery) -> MemoryMessage:
        message = cls.of(delivery.message, delivery_attempt=delivery.attempts)
        message.delivery = delivery
        return message


class MemorySubscription(Subscription):
    """One subscriber's share of a group. Like a channel of a real broker, it keeps the
    messages it handed out until they are settled, and gives the unsettled ones back to
    the group when it closes."""

    def __init__(self, group: _Group, deliver: Deliver, *, private: bool) -> None:
        self.group = group
        self.private = private
        self.deliver = deliver
        self.unacked: dict[_Delivery, None] = {}  # a dict keeps delivery order
        self.closed = False

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        group = self.group
        if group.inline:
            await _forever()  # the inline engine delivers at publish; stop cancels this
        if len(group.consumers) > 1:
            await asyncio.sleep(0)  # let the competing consumers take their turn
        if not group.queue:
            await group.wait_for_messages()
        # A lone consumer takes what is there in one go; competing ones take turns.
        batch = group.take(limit if len(group.consumers) == 1 else 1)
        self.unacked.update(dict.fromkeys(batch))
        return [MemoryMessage.of_delivery(delivery) for delivery in batch]

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        unacked = self.unacked
        for message in (*acked, *rejected):
            unacked.pop(message.delivery, None)  # type: ignore[attr-defined]

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        for message in reversed(messages):  # requeued at the head: keep their order
            delivery: _Delivery = message.delivery  # type: ignore[attr-defined]
            if delivery in self.unacked:
                del self.unacked[delivery]
                if not self.group.inline:  # inline: the publisher delivers it again
                    self.group.requeue(delivery)

    async def close(self) -> None:
        """Unsettled means unprocessed: hand those messages back to the group, in order."""
        if self.closed:
            return
        self.closed = True
        group = self.group
        group.consumers.remove(self)
        if self.private:
            # A private group dies with its consumer, or it would fill up unread.
            group.engine.drop(group)
        if self.unacked:
            group.queue.extendleft(reversed(list(self.unacked)))
            self.unacked.clear()
            group.wake()


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


class _Group:
    def __init__(self, engine: MemoryEngine, spec: SubscriptionSpec, name: str) -> None:
        self.engine = engine
        self.spec = spec
        self.name = name
        self.inline = engine.inline
        self.queue: deque[_Delivery] = deque()
        self.consumers: list[MemorySubscription] = []
        self._turn = 0
        self._has_messages = _Signal()
        self._has_room = _Signal(is_set=True)

    def wake(self) -> None:
        self._has_messages.set()

    async def wait_for_messages(self) -> None:
        self._has_messages.clear()
        await self._has_messages.wait()

    async def put(self, delivery: _Delivery, timeout: float) -> None:
        while len(self.queue) >= self.engine.max_queue:
            self._has_room.clear()
            try:
                await asyncio.wait_for(self._has_room.wait(), timeout)
            except TimeoutError:
                raise PublishError(
                    f"memory group {self.name!r} on {self.spec.channel} is full "
                    f"({self.engine.max_queue} messages) and nothing consumed it in {timeout}s"
                ) from None
        self.queue.append(delivery)
        self._has_messages.set()

    def take(self, size: int) -> list[_Delivery]:
        queue = self.queue
        batch = [queue.popleft() for _ in range(min(size, len(queue)))]
        for delivery in batch:
            delivery.attempts += 1
        if len(queue) < self.engine.max_queue:
            self._has_room.set()
        if queue:
            self._has_messages.set()
        return batch

    def requeue(self, delivery: _Delivery) -> None:
        """Put ``delivery`` back at the head of the queue, for another delivery."""
        self.queue.appendleft(delivery)
        self._has_messages.set()

    def next_consumer(self) -> MemorySubscription:
        self._turn = (self._turn + 1) % len(self.consumers)
        return self.consumers[self._turn]


class MemoryEngine:
    """The broker behind ``memory://`` URLs and the test broker.

    ``max_queue`` bounds each group: a publish to a full group waits for room, up to
    ``publish_timeout`` seconds, then raises :class:`~fastapi_stream.PublishError`.
    """

    def __init__(
        self,
        *,
        inline: bool = False,
        max_queue: int = 10_000,
        publish_timeout: float = 10.0,
        routing: Routing = DEFAULT_ROUTING,
    ) -> None:
        self.inline = inline
        self.max_queue = max_queue
        self.publish_timeout = publish_timeout
        self.routing = routing
        self._groups: dict[str, _Group] = {}
        # With the default routing, plain channel names are looked up, not scanned.
        self._by_channel: dict[str, list[_Group]] = {}
        self._scanned: list[_Group] = []
        self._replies: Replies[OutgoingMessage] = Replies()

    # -- consuming ---------------------------------------------------------------------

    def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> MemorySubscription:
        key = self.routing.group_key(spec)
        private = key is None
        if key is None:
            key = f"_private.{next(_private_ids)}"
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(self, spec, key)
            if self.routing is DEFAULT_ROUTING and not spec.channel.is_pattern:
                self._by_channel.setdefault(spec.channel.template, []).append(group)
            else:
                self._scanned.append(group)
        consumer = MemorySubscription(group, deliver, private=private)
        group.consumers.append(consumer)
        return consumer

    def drop(self, group: _Group) -> None:
        """Forget ``group`` (a private group whose consumer stopped)."""
        self._groups.pop(group.name, None)
        if group in self._scanned:
            self._scanned.remove(group)
        peers = self._by_channel.get(group.spec.channel.template)
        if peers is not None and group in peers:
            peers.remove(group)
            if not peers:
                del self._by_channel[group.spec.channel.template]

    def _groups_for(self, message: OutgoingMessage) -> list[_Group]:
        exact = self._by_channel.get(message.channel, ())
        if not self._scanned:
            return list(exact)
        matches = self.routing.matches
        return [*exact, *(g for g in self._scanned if matches(g.spec, message))]

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        if message.channel == _INBOX:
            self._replies.resolve(message.correlation_id, message)
            return
        for group in self._groups_for(message):
            if self.inline:
                await self._deliver_inline(group, _Delivery(message))
            else:
                await group.put(_Delivery(message), self.publish_timeout)

    async def _deliver_inline(self, group: _Group, delivery: _Delivery) -> None:
        for _ in range(_INLINE_REDELIVERY_LIMIT):
            if not group.consumers:
                return
            consumer = group.next_consumer()
            delivery.attempts += 1
            consumer.unacked[delivery] = None
            message = MemoryMessage.of_delivery(delivery)
            try:
                await consumer.deliver([message])
            except Exception:
                if message.settlement is not Settlement.NACK:
                    raise
                continue
            finally:
                consumer.unacked.pop(delivery, None)
            if message.settlement is not Settlement.NACK:
                return
        raise StreamError(
            f"message {delivery.message.message_id} on {delivery.message.channel} was "
            f"nacked {_INLINE_REDELIVERY_LIMIT} times in a row"
        )

    async def request(self, message: OutgoingMessage, timeout: float) -> OutgoingMessage:
        return await self._replies.request(message, _INBOX, timeout, self.publish)

    def stats(self) -> dict[str, Any]:
        """Queued and unacknowledged messages per group, for health output and tests."""
        return {
            group.name: {
                "queued": len(group.queue),
                "unacked": sum(len(c.unacked) for c in group.consumers),
                "consumers": len(group.consumers),
            }
            for group in self._groups.values()
        }
