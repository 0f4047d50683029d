"""A complete transport in one small file: in-process queues, one per consumer group.

``docs/transports.md`` walks through it, and the conformance suite runs it exactly like
the real brokers (``tests/conformance/conftest.py``). Everything a broker does not decide
(the consume loop, workers, retries and their delays, results, dead letters, decoding,
validation, dependencies) is the core's; this file only says how its "broker" stores,
hands out, settles and redelivers messages.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

from fastapi_stream import OutgoingMessage, StreamMessage, Subscription, SubscriptionSpec, Transport
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import DEFAULT_ROUTING, Deliver

_INBOX = "_replies"
_private = itertools.count()


class Group:
    """The queue of one consumer group: every subscription of the group competes for it."""

    def __init__(self, spec: SubscriptionSpec) -> None:
        self.spec = spec
        self.ready: deque[OutgoingMessage] = deque()
        self.arrived = asyncio.Event()
        self.members = 0

    def put(self, messages: Sequence[OutgoingMessage], *, first: bool = False) -> None:
        if first:
            self.ready.extendleft(reversed(messages))  # handed back: ahead, in order
        else:
            self.ready.extend(messages)
        self.arrived.set()


class Queues:
    """The "broker": its groups (which outlive their consumers) and its reply waiters."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.replies: Replies[StreamMessage] = Replies()


class QueueSubscription(Subscription):
    """One subscriber's consumer: what it fetched stays its own until settled."""

    def __init__(self, queues: Queues, key: str, group: Group, *, private: bool) -> None:
        self.queues, self.key, self.group, self.private = queues, key, group, private
        self.unsettled: dict[str, OutgoingMessage] = {}

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        group = self.group
        if group.members > 1:  # competing consumers take turns, one message each
            limit = 1
            await asyncio.sleep(0)
        if not group.ready:
            group.arrived.clear()
            try:
                await asyncio.wait_for(group.arrived.wait(), 1.0)
            except TimeoutError:
                return []  # idle: the core calls again
        taken = [group.ready.popleft() for _ in range(min(limit, len(group.ready)))]
        self.unsettled.update((m.message_id, m) for m in taken)
        return [StreamMessage.of(m) for m in taken]

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        for message in (*acked, *rejected):
            self.unsettled.pop(str(message.message_id), None)

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        back = [self.unsettled.pop(str(m.message_id)) for m in messages]
        self.group.put(back, first=True)

    async def close(self) -> None:
        self.group.members -= 1
        if self.private:
            del self.queues.groups[self.key]  # nobody else will read it
        elif self.unsettled:
            self.group.put(list(self.unsettled.values()), first=True)
        self.unsettled.clear()


_brokers: dict[str, Queues] = {}


class QueueTransport(Transport):
    """``queues://name``: routers given the same name share one :class:`Queues`."""

    schemes = ("queues",)

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.queues = _brokers.setdefault(name, Queues())

    @classmethod
    def from_url(cls, url: str) -> QueueTransport:
        return cls(url.removeprefix("queues://") or "default")

    def describe(self) -> str:
        return f"queues://{self.name}"

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self, timeout: float) -> bool:
        return True

    async def publish(self, message: OutgoingMessage) -> None:
        if message.channel == _INBOX:
            self.queues.replies.resolve(message.correlation_id, StreamMessage.of(message))
            return
        for group in self.queues.groups.values():
            if DEFAULT_ROUTING.matches(group.spec, message):
                group.put([message])

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        return await self.queues.replies.request(message, _INBOX, timeout, self.publish)

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        key = DEFAULT_ROUTING.group_key(spec)
        private = key is None
        key = key or f"_private.{next(_private)}"
        group = self.queues.groups.setdefault(key, Group(spec))
        group.members += 1
        return QueueSubscription(self.queues, key, group, private=private)
