"""NATS and JetStream options, declared once: the connection's (:class:`NatsOptions`,
taken by ``NatsTransport`` and ``NatsRouter``), the subscriber ``options`` the transport
reads, and the publish options.

The names follow FastStream's NATS broker (``stream=``, ``durable=``, ``kv_watch=``...).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

__all__ = [
    "DeliverPolicy",
    "JStream",
    "KvWatch",
    "NatsOptions",
    "NatsPublishOptions",
    "NatsSubscriberOptions",
    "PullSub",
    "Retention",
    "Storage",
]

Retention = Literal["limits", "interest", "workqueue"]
Storage = Literal["file", "memory"]
DeliverPolicy = Literal["all", "last", "new", "last_per_subject"]


@dataclass(frozen=True, slots=True)
class JStream:
    """A JetStream stream, declared when a subscriber using it starts (``declare=True``).

    ``subjects`` defaults to nothing, which NATS reads as the stream's ``name``. A stream
    that exists with another configuration is updated to this one.
    """

    name: str
    subjects: Sequence[str] = ()
    retention: Retention = "limits"
    storage: Storage = "file"
    #: Seconds a message is kept; ``None`` keeps it until another limit removes it.
    max_age: float | None = None
    max_msgs: int | None = None
    max_bytes: int | None = None
    declare: bool = True


@dataclass(frozen=True, slots=True)
class PullSub:
    """A pull consumer: fetch up to ``batch_size`` messages per request (the subscriber's
    ``prefetch`` when ``None``), waiting up to ``timeout`` seconds for the first one."""

    batch_size: int | None = None
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class KvWatch:
    """Watch the keys of a key-value ``bucket`` (created when missing with ``declare``)."""

    bucket: str
    declare: bool = True
    include_history: bool = False
    ignore_deletes: bool = False


class NatsOptions(TypedDict, total=False):
    """The connection's options: keyword arguments of ``NatsTransport`` and ``NatsRouter``
    [default]. Credentials go in the URL (``nats://user:pass@host``) or in ``user`` and
    ``password``, ``token``, ``nkeys_seed`` or ``user_credentials`` (a creds file): those,
    ``name``, ``tls`` and ``tls_hostname`` are nats-py's ``connect`` options, as is any
    other keyword a ``NatsTransport`` is given."""

    #: A default JetStream stream: declared at connect, used by every subscriber that
    #: names none; publishes to its subjects wait for JetStream's ack [None]
    stream: str | JStream | None
    connect_timeout: float  #: seconds the first connection may take [5]
    publish_timeout: float  #: seconds a JetStream publish waits for its ack [5]
    max_reconnect_attempts: int  #: -1: forever (nats-py's own default is 60) [-1]
    reconnect_time_wait: float  #: seconds between reconnect attempts [2]
    #: Seconds between the client's pings; a connection that leaves
    #: ``max_outstanding_pings`` of them unanswered is taken for dead and replaced, so a
    #: silent (not closed) connection is noticed within about their product [20, 2]
    #: (nats-py's own 120 s and 2 took four to six minutes)
    ping_interval: float
    max_outstanding_pings: int
    name: str | None
    user: str | None
    password: str | None
    token: str | None
    nkeys_seed: str | None
    user_credentials: str | None
    tls: ssl.SSLContext | None
    tls_hostname: str | None


class NatsSubscriberOptions(TypedDict, total=False):
    """What ``NatsRouter.subscriber`` passes to the transport in ``options``.

    Without ``stream`` (and without a router-wide default stream) a subscriber is a core
    NATS subscription: at-most-once.
    """

    #: Consume through JetStream from this stream (a name, or a :class:`JStream` to declare).
    stream: str | JStream
    #: A durable consumer's name; subscribers sharing it compete for its messages.
    durable: str
    #: A pull consumer (``True`` or :class:`PullSub`) instead of a push consumer.
    pull: bool | PullSub
    deliver_policy: DeliverPolicy
    #: Seconds JetStream waits for an ack before delivering again (NATS default 30).
    ack_wait: float
    #: Deliveries after which JetStream gives up on a message (NATS default: no limit).
    max_deliver: int
    #: Seconds without a subscriber after which the server deletes the consumer.
    inactive_threshold: float
    #: Watch a key-value bucket instead of a subject; the channel is the key pattern.
    kv_watch: str | KvWatch


class NatsPublishOptions(TypedDict, total=False):
    """What ``broker.publish(..., **options)`` understands on NATS."""

    #: Publish through JetStream and wait for this stream's ack.
    stream: str
    #: Seconds to wait for the JetStream ack (the transport's ``publish_timeout`` if unset).
    timeout: float
