"""Redis options, declared once: the connection's (:class:`RedisOptions`, taken by
``RedisTransport`` and ``RedisRouter``), what ``RedisRouter.subscriber``/``publisher``
take and what the transport reads from ``spec.options`` and ``message.options``.

The names follow FastStream's Redis broker: ``channel=`` (pub/sub), ``list=`` (a work
queue) and ``stream=`` (consumer groups) pick the kind of a subscription or a publish.
A bare name takes the transport's ``default_kind`` (``"pubsub"`` unless configured).
Through a plain ``StreamRouter`` the options are ``pubsub=``, ``list=`` and ``stream=``
(``channel`` is the core's positional argument there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from fastapi_stream.core.errors import ConfigurationError

__all__ = [
    "KINDS",
    "Kind",
    "ListSub",
    "PubSub",
    "RedisOptions",
    "RedisPublishOptions",
    "RedisSubscriberOptions",
    "StreamSub",
    "kind_of",
]

Kind = Literal["pubsub", "list", "stream"]
KINDS: tuple[Kind, ...] = ("pubsub", "list", "stream")


class RedisOptions(TypedDict, total=False):
    """The connection's options: keyword arguments of ``RedisTransport`` and ``RedisRouter``
    [default]."""

    #: What a bare name means to subscribers and publishes that choose no kind (and to a
    #: handler's result) ["pubsub", as in FastStream]
    default_kind: Kind
    publish_timeout: float  #: seconds that bound every publish and settlement [5]
    connect_timeout: float  #: [5]
    #: Seconds a list or stream consumer may stay silent before its unsettled messages go
    #: to other consumers [30]
    min_idle_time: float
    client_name: str  #: names the connections in ``CLIENT LIST`` ["fastapi-stream"]
    #: Connections to Redis at most; a command beyond waits for a free one (within its
    #: timeout) instead of failing [100]
    max_connections: int


@dataclass(frozen=True, slots=True)
class PubSub:
    """A pub/sub channel (at-most-once). ``pattern=True`` makes ``name`` a Redis glob
    pattern (``"logs.*"``, ``"user.[ab]?"``) subscribed with PSUBSCRIBE."""

    name: str
    pattern: bool = False


@dataclass(frozen=True, slots=True)
class ListSub:
    """A list used as a work queue: every subscriber of a list competes for its items.

    ``reliable=True`` (the default) moves each item to a processing list of its consumer
    until it is settled, so a crash loses nothing: a consumer silent for
    ``min_idle_time`` seconds has its items moved back by the others. ``reliable=False``
    pops items (at-most-once: a crash loses what was popped).
    """

    name: str
    reliable: bool = True
    #: Seconds after which a silent consumer counts as dead (``None``: the transport's).
    min_idle_time: float | None = None


@dataclass(frozen=True, slots=True)
class StreamSub:
    """A stream read through a consumer group (XREADGROUP / XACK).

    Without a ``group`` the subscriber gets a private group that lives as long as it
    does. ``consumer`` names this consumer within the group (unique by default).
    Entries pending with a consumer that has been idle for ``min_idle_time`` seconds are
    claimed (XAUTOCLAIM); ``None`` takes the transport's default. A new group starts at
    ``last_id`` (``"$"``: only entries added from now on; ``"0"``: the whole stream).
    """

    name: str
    group: str | None = None
    consumer: str | None = None
    min_idle_time: float | None = None
    last_id: str = "$"


class RedisSubscriberOptions(TypedDict, total=False):
    """What a subscriber passes to the transport in ``options``: one of the three kinds,
    as ``True`` or its settings."""

    pubsub: bool | PubSub
    list: bool | ListSub
    stream: bool | StreamSub


class RedisPublishOptions(TypedDict, total=False):
    """What ``broker.publish(..., **options)`` understands on Redis."""

    pubsub: bool  #: PUBLISH to the pub/sub channel
    list: bool  #: RPUSH to the list
    stream: bool  #: XADD to the stream
    #: Trim the stream to this many entries (``XADD MAXLEN``).
    maxlen: int


def kind_of(options: Mapping[str, Any], default: Kind) -> Kind:
    """The kind chosen in ``options`` (subscriber or publish), else ``default``."""
    chosen = [kind for kind in KINDS if options.get(kind)]
    if len(chosen) > 1:
        raise ConfigurationError(f"choose one of pubsub=, list= or stream=, not {chosen}")
    return chosen[0] if chosen else default
