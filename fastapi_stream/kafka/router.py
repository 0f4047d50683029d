"""``KafkaRouter``: a :class:`~fastapi_stream.StreamRouter` on Kafka with typed Kafka options."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, Unpack

from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.middleware import chain_publish
from fastapi_stream.core.options import given, split_options
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.kafka.options import (
    AutoOffsetReset,
    KafkaOptions,
    Partition,
    RebalanceListener,
)
from fastapi_stream.kafka.transport import KafkaTransport
from fastapi_stream.router import RouterOptions, StreamRouter

__all__ = ["KafkaRouter"]

P = ParamSpec("P")
R = TypeVar("R")


class KafkaRouterOptions(KafkaOptions, RouterOptions, total=False):
    """KafkaRouter's keyword arguments."""


class KafkaRouter(StreamRouter):
    """A ``StreamRouter`` connected to Kafka at ``bootstrap_servers`` (``"host:9092"``,
    ``"h1:9092,h2:9092"`` or a list): keyword arguments are the connection's
    (:class:`~fastapi_stream.kafka.KafkaOptions`) and :class:`StreamRouter`'s."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        **options: Unpack[KafkaRouterOptions],
    ) -> None:
        connection, router = split_options(options, KafkaOptions.__optional_keys__)
        self.transport = KafkaTransport(bootstrap_servers, **connection)
        super().__init__(self.transport, **router)

    def subscriber(  # type: ignore[override]  # topics as positional arguments
        self,
        *topics: str,
        group_id: str | None = None,
        pattern: str | None = None,
        partitions: Sequence[Partition] | None = None,
        auto_offset_reset: AutoOffsetReset | None = None,
        max_records: int | None = None,
        batch_timeout_ms: int | None = None,
        listener: RebalanceListener | None = None,
        session_timeout_ms: int | None = None,
        heartbeat_interval_ms: int | None = None,
        max_poll_interval_ms: int | None = None,
        group_instance_id: str | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Endpoint[P, R]]:
        """Consume ``topics`` (one or several; ``{param}`` path parameters allowed in a
        single one) or every topic matching ``pattern`` into the decorated function.

        ``group_id`` (the same as ``group=``) makes the subscribers of every instance
        share the partitions; without one every instance gets every message.
        ``group_instance_id`` makes this member static: a restarted replica with the same
        id takes its partitions back without a rebalance (where the broker supports it).
        ``partitions`` consumes given partitions only, without rebalancing.
        ``batch=True`` hands the handler up to ``max_records`` records at once, waiting
        up to ``batch_timeout_ms`` for them. ``max_workers`` > 1 handles partitions and
        keys concurrently, keeping each key's order. Other keyword arguments are
        :meth:`StreamRouter.subscriber`'s (``retry``, ``dead_letter``, ``max_workers``...).
        """
        if group_id is not None:
            if options.get("group") not in (None, group_id):
                raise ConfigurationError("give group_id= or group=, not both")
            options["group"] = group_id
        if not topics and not pattern:
            raise ConfigurationError("KafkaRouter.subscriber needs a topic or a pattern=")
        if group_instance_id and not options.get("group"):
            raise ConfigurationError("group_instance_id= needs a group_id= (static membership)")
        if topics and pattern:
            raise ConfigurationError("give topics or pattern=, not both")
        if partitions and (pattern or len(topics) > 1):
            raise ConfigurationError("partitions= works with a single topic")
        channel = topics[0] if topics else str(pattern)
        kafka_options = given(
            topics=list(topics[1:]) or None,
            pattern=pattern,
            partitions=list(partitions) if partitions else None,
            auto_offset_reset=auto_offset_reset,
            max_records=max_records,
            batch_timeout_ms=batch_timeout_ms,
            listener=listener,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            group_instance_id=group_instance_id,
        )
        return super().subscriber(channel, **options, **kafka_options)

    def publisher(  # type: ignore[override]  # a topic is required
        self,
        channel: str,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Publisher:
        """A publisher to the topic ``channel``; ``key``, ``partition`` and ``headers``
        are defaults for every publish through it."""
        return super().publisher(
            channel, headers=headers, **options, **given(key=key, partition=partition)
        )

    async def publish_batch(
        self,
        *messages: Any,
        topic: str,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish ``messages`` to ``topic`` in one go: they are queued in order, travel in
        the producer's batches, and this returns once the broker confirmed them all.

        Each message goes through the publish middlewares (which see it queued, not
        confirmed); raises ``PublishError`` if any of them failed.
        """
        broker = self.broker
        options = given(key=key, partition=partition)
        queued: list[OutgoingMessage] = []

        async def queue(message: OutgoingMessage) -> None:
            queued.append(message)

        through_middlewares = chain_publish(broker.middlewares, queue)
        for message in messages:
            await through_middlewares(
                broker.outgoing(message, topic, headers=headers, options=options)
            )
        if queued:
            await broker.transport.publish_many(queued)
