"""``redis://`` and ``rediss://``: pub/sub channels, lists and streams on redis-py asyncio.

The only modules of fastapi_stream that import redis-py are this one and ``consume.py``
(what a subscriber fetches and settles on each kind). Lists and pub/sub carry the
metadata in ``core/envelope.py``'s envelope; streams in fields of the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar, Unpack

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import MaxConnectionsError, RedisError

from fastapi_stream.core import envelope
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.errors import (
    BrokerNotConnected,
    PublishError,
    TransportError,
    client_errors,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.options import check_options
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import Deliver, Subscription, SubscriptionSpec, Transport
from fastapi_stream.core.url import redact
from fastapi_stream.redis.consume import ListSubscription, PubSubscription, StreamSubscription
from fastapi_stream.redis.options import KINDS, Kind, PubSub, RedisOptions, RedisPublishOptions
from fastapi_stream.redis.routing import RedisRouting
from fastapi_stream.redis.wire import stream_fields

__all__ = ["RedisTransport"]

#: The client's errors, raised as PublishError or TransportError.
_ERRORS = (RedisError, OSError)

log = logging.getLogger("fastapi_stream.redis")

_SETUP_TIMEOUT = 5.0
_REMEMBERED_REPLIES = 10_000
_T = TypeVar("_T")


class _WaitingPool(aioredis.ConnectionPool):
    """redis-py's pool, except that a command finding all ``max_connections`` in use
    waits for one to be released instead of failing with ``MaxConnectionsError``: a burst
    of concurrent publishes waits its turn. redis-py's ``BlockingConnectionPool`` waits
    too, but takes a Condition and a timeout for every command, which cost a request ->
    reply round trip about 10 %; here a command pays only when it has to wait. Every wait
    is bounded by the command's own ``asyncio.timeout``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._released = asyncio.Event()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            self._released.clear()
            try:
                return await super().get_connection()  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                await self._released.wait()  # set by a release since the clear above

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        self._released.set()


# -- the transport -----------------------------------------------------------------------

_Subscription = PubSubscription | ListSubscription | StreamSubscription
_KINDS: dict[Kind, type[_Subscription]] = {
    "pubsub": PubSubscription,
    "list": ListSubscription,
    "stream": StreamSubscription,
}


def _command(client: Any, kind: Kind, message: OutgoingMessage) -> Any:
    """Queue (on a pipeline) or send (on a client) the command publishing ``message``."""
    if kind == "stream":
        maxlen = message.options.get("maxlen")
        return client.xadd(
            message.channel, stream_fields(message), maxlen=maxlen, approximate=False
        )
    if kind == "list":
        return client.rpush(message.channel, envelope.pack(message))
    return client.publish(message.channel, envelope.pack(message))


class RedisTransport(Transport):
    """A connection to Redis (``redis://host:6379/0``, ``rediss://`` for TLS), with
    :class:`~fastapi_stream.redis.RedisOptions`."""

    schemes = ("redis", "rediss")
    publish_options = RedisPublishOptions.__optional_keys__

    def __init__(
        self, url: str = "redis://localhost:6379", **options: Unpack[RedisOptions]
    ) -> None:
        check_options(type(self).__name__, options, RedisOptions.__optional_keys__)
        default_kind = options.get("default_kind", "pubsub")
        if default_kind not in KINDS:
            raise ValueError(f"default_kind must be one of {KINDS}, not {default_kind!r}")
        self.url = url
        self.default_kind: Kind = default_kind
        self.publish_timeout = options.get("publish_timeout", 5.0)
        self.connect_timeout = options.get("connect_timeout", 5.0)
        self.min_idle_time = options.get("min_idle_time", 30.0)
        self.client_name = options.get("client_name", "fastapi-stream")
        self.max_connections = options.get("max_connections", 100)
        self._routing = RedisRouting(default_kind)
        self._client: aioredis.Redis | None = None
        self._inbox_name = f"fastapi-stream.inbox.{uuid.uuid4().hex}"
        self._inbox: PubSubscription | None = None
        self._inbox_reader: asyncio.Task[None] | None = None
        self._inbox_lock = asyncio.Lock()
        self._requests: Replies[StreamMessage] = Replies()
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
        self._inbox_lock = asyncio.Lock()  # asyncio primitives belong to one event loop
        pool = _WaitingPool.from_url(
            self.url,
            max_connections=self.max_connections,
            socket_connect_timeout=self.connect_timeout,
            # No socket timeout: redis-py would then run every send in a task of its own
            # (asyncio.wait_for). Every command here is bounded by an asyncio.timeout.
            socket_timeout=None,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
            client_name=self.client_name,
        )
        client = aioredis.Redis.from_pool(pool)
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
        reader, self._inbox_reader = self._inbox_reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            await inbox.close()
        self._requests.fail_all(BrokerNotConnected(f"{self.describe()} was closed"))
        await client.aclose()

    async def ping(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                return bool(await self.client.ping())
        except Exception:
            return False

    @contextlib.asynccontextmanager
    async def bounded(self) -> AsyncIterator[None]:
        """Bound housekeeping commands (setup, hand-backs) that must not hang."""
        async with asyncio.timeout(_SETUP_TIMEOUT):
            yield

    async def settling(self, command: Awaitable[_T]) -> _T:
        """Run a settle or redeliver command, bounded like a publish."""
        async with self._client_errors("the settlement", TransportError):
            return await command

    def _client_errors(
        self, what: str, error: type[TransportError] = PublishError
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """``what`` bounded by ``publish_timeout``, redis-py's errors raised as ``error``."""
        broker, timeout = f"Redis at {self.describe()}", self.publish_timeout
        return client_errors(what, _ERRORS, broker=broker, timeout=timeout, error=error)

    # -- messages ----------------------------------------------------------------------

    def unpacked(self, raw: bytes, channel: str, raw_message: Any) -> StreamMessage:
        """The message in a list item or pub/sub payload (see ``core/envelope.py``)."""
        body, meta = envelope.unpack(raw)
        self.expect_reply(meta.get("reply_to"))
        return envelope.message_from(body, meta, channel, raw_message)

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

    # -- publishing --------------------------------------------------------------------

    async def publish(self, message: OutgoingMessage) -> None:
        kind = self._publish_kind(message)
        async with self._client_errors(f"the publish to {kind} {message.channel!r}"):
            await _command(self.client, kind, message)

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish ``messages`` in one pipeline (one round trip)."""
        async with (
            self._client_errors(f"{len(messages)} publish(es)"),
            self.client.pipeline(transaction=False) as pipe,
        ):
            for message in messages:
                _command(pipe, self._publish_kind(message), message)
            await pipe.execute()

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        if self._client is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        async with self._inbox_lock:
            if self._inbox_reader is None:
                spec = SubscriptionSpec(
                    ChannelPattern.parse(self._inbox_name),
                    options={"pubsub": PubSub(self._inbox_name)},
                )
                self._inbox = inbox = PubSubscription(self, spec)
                async with self.bounded():
                    await inbox.open()
                self._inbox_reader = asyncio.create_task(self._read_replies(inbox))
        return await self._requests.request(message, self._inbox_name, timeout, self.publish)

    async def _read_replies(self, inbox: PubSubscription) -> None:
        """Hand each reply arriving in this transport's inbox to its waiting request."""
        while True:
            try:
                replies = await inbox.fetch(100)
            except Exception as exc:
                log.warning("redis reply inbox failed (%s); subscribing again", exc)
                await asyncio.sleep(1.0)
                continue
            for reply in replies:
                self._requests.resolve(reply.correlation_id, reply)

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
        subscription = _KINDS[kind](self, spec)
        try:
            async with self.bounded():
                await subscription.open()
        except (TimeoutError, RedisError, OSError) as exc:
            await subscription.close()
            raise TransportError(
                f"cannot subscribe to Redis {subscription.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return subscription
