"""Kafka options, declared once: the connection's (:class:`KafkaOptions`, taken by
``KafkaTransport`` and ``KafkaRouter``), topics to declare, and the subscriber and publish
options the transport reads.

The names follow aiokafka and FastStream's Kafka broker (``group_id``,
``auto_offset_reset``, ``max_records``, ``key``, ``partition``, ``timestamp_ms``...).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict

from fastapi_stream.core.errors import ConfigurationError

__all__ = [
    "AutoOffsetReset",
    "KafkaOptions",
    "KafkaPublishOptions",
    "KafkaSubscriberOptions",
    "KafkaTopic",
    "Partition",
    "RebalanceListener",
    "Sasl",
    "SaslMechanism",
    "security_settings",
]

logger = logging.getLogger("fastapi_stream.kafka")

SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
AutoOffsetReset = Literal["latest", "earliest"]
#: A partition to consume: ``3`` (of the subscriber's topic) or ``("orders", 3)``.
Partition = int | tuple[str, int]


@dataclass(frozen=True, slots=True)
class Sasl:
    """SASL credentials: ``Sasl("alice", "secret")`` is PLAIN, ``mechanism="SCRAM-SHA-512"``
    picks SCRAM. Use it over TLS (``tls=True``): over plain TCP a warning is logged."""

    username: str
    password: str = field(repr=False)
    mechanism: SaslMechanism = "PLAIN"


@dataclass(frozen=True, slots=True)
class KafkaTopic:
    """A topic the transport creates when it connects, if it does not exist yet.

    ``replication`` of ``None`` leaves it to the broker's default. A topic that exists
    is left as it is, even with other settings.
    """

    name: str
    partitions: int = 1
    replication: int | None = None
    #: Topic configs, e.g. ``{"cleanup.policy": "compact", "retention.ms": "86400000"}``.
    config: Mapping[str, str] = field(default_factory=dict)


class RebalanceListener(Protocol):
    """Told when the consumer group moves partitions; aiokafka's
    ``ConsumerRebalanceListener`` fits. Both methods get ``(topic, partition)`` pairs;
    ``on_partitions_revoked`` runs after the offsets of those partitions were committed."""

    def on_partitions_revoked(self, revoked: Collection[tuple[str, int]]) -> Awaitable[None]: ...

    def on_partitions_assigned(self, assigned: Collection[tuple[str, int]]) -> Awaitable[None]: ...


class KafkaOptions(TypedDict, total=False):
    """The connection's options: keyword arguments of ``KafkaTransport`` and ``KafkaRouter``
    [default]. The consumer settings are defaults each subscriber may override."""

    client_id: str  #: ["fastapi-stream"]
    sasl: Sasl | None  #: SASL PLAIN or SCRAM credentials, for use with ``tls`` [None]
    tls: bool | ssl.SSLContext  #: ``True``: TLS with the default context [False]
    request_timeout_ms: int  #: [40000]
    metadata_max_age_ms: int  #: [300000]
    acks: Literal[0, 1, "all"]  #: "all": confirmed once every in-sync replica has it ["all"]
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None  #: [None]
    linger_ms: int  #: [0]
    enable_idempotence: bool  #: not every Kafka-protocol broker supports it [False]
    publish_timeout: float  #: seconds a publish waits for its confirmation [10]
    connect_timeout: float  #: [10]
    topics: Sequence[KafkaTopic]  #: created when the transport connects, if missing [()]
    session_timeout_ms: int  #: [10000]
    heartbeat_interval_ms: int  #: [3000, at most a third of the session timeout]
    max_poll_interval_ms: int  #: [300000]
    auto_offset_reset: AutoOffsetReset  #: ["latest"]
    reply_topic_prefix: str  #: requests' reply topics: {prefix}.{uuid} ["fastapi-stream.replies"]
    producer_options: Mapping[str, Any] | None  #: more ``AIOKafkaProducer`` settings
    consumer_options: Mapping[str, Any] | None  #: more ``AIOKafkaConsumer`` settings


class KafkaSubscriberOptions(TypedDict, total=False):
    """What ``KafkaRouter.subscriber`` passes to the transport in ``options``; the same
    keywords work on ``StreamRouter("kafka://...").subscriber``."""

    #: More topics for the same handler, besides the channel.
    topics: Sequence[str]
    #: Consume every topic whose name matches this regular expression.
    pattern: str
    #: Consume these partitions only, without group rebalancing (offsets are still
    #: committed when there is a group).
    partitions: Sequence[Partition]
    #: Where a group (or a subscriber without group) starts on a partition it has no
    #: committed offset for. Topics created after the subscriber started are always read
    #: from their beginning.
    auto_offset_reset: AutoOffsetReset
    #: ``batch=True``: most records in one handler call (default: the prefetch).
    max_records: int
    #: ``batch=True``: how long to wait for a batch to fill up before handing it over.
    batch_timeout_ms: int
    #: Told about partitions assigned and revoked.
    listener: RebalanceListener
    session_timeout_ms: int
    heartbeat_interval_ms: int
    max_poll_interval_ms: int
    #: Static group membership: a name for this member, unique in its group and the same
    #: across restarts (say, the replica's name), so that a restarted replica takes its
    #: partitions back without a rebalance, if it is back within the session timeout.
    group_instance_id: str
    #: Longest wait for a group's first assignment before the app starts anyway.
    assignment_timeout: float
    #: How long a revoked partition waits for its in-flight handlers before committing.
    revoke_timeout: float
    isolation_level: Literal["read_uncommitted", "read_committed"]
    #: Extra ``AIOKafkaConsumer`` keyword arguments.
    consumer_options: Mapping[str, object]


class KafkaPublishOptions(TypedDict, total=False):
    """What ``broker.publish(..., **options)`` understands on Kafka."""

    #: The record key (``str`` is UTF-8 encoded); records with one key keep their order.
    key: str | bytes
    #: The partition to write to (default: by key, else the producer's choice).
    partition: int
    #: The record's timestamp in milliseconds since the epoch (default: now).
    timestamp_ms: int


def security_settings(sasl: Sasl | None, tls: bool | ssl.SSLContext, where: str) -> dict[str, Any]:
    """aiokafka's security settings for SASL and TLS."""
    context: ssl.SSLContext | None = None
    if isinstance(tls, ssl.SSLContext):
        context = tls
    elif tls:
        context = ssl.create_default_context()
    if sasl is None:
        return {"security_protocol": "SSL", "ssl_context": context} if context else {}
    if sasl.mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigurationError(
            f"unknown SASL mechanism {sasl.mechanism!r}; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        )
    if context is None:
        logger.warning(
            "SASL credentials for %s travel without TLS; pass tls=True (kafka://...?tls=true)",
            where,
        )
    return {
        "security_protocol": "SASL_SSL" if context else "SASL_PLAINTEXT",
        "ssl_context": context,
        "sasl_mechanism": sasl.mechanism,
        "sasl_plain_username": sasl.username,
        "sasl_plain_password": sasl.password,
    }
