"""The transports under test: how the service subscribes and the producer publishes on each.

Shared by the consumer service (``service.py``, its own process) and the producer in the
test process, so both sides agree on channels, streams and options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi_stream import Retry, StreamRouter
from fastapi_stream.core.broker import DEFAULT_MAX_BODY_BYTES

__all__ = ["KINDS", "Kind", "Settings"]


@dataclass(frozen=True)
class Settings:
    """What one service process is told through its environment (``FAULTS_*``)."""

    kind: str
    url: str
    channel: str
    group: str = "faults"
    prefetch: int = 10
    workers: int = 1
    max_attempts: int = 5
    backoff: float = 0.2
    max_backoff: float = 2.0
    #: Redis: seconds before the entries of a silent consumer are claimed by the others;
    #: JetStream: ``ack_wait``.
    idle: float = 3.0
    #: Dead letters go to ``dead_letter_channel`` (the service subscribes to it).
    dead_letter: bool = False
    graceful: float = 15.0
    max_body: int = DEFAULT_MAX_BODY_BYTES
    #: Seconds a publish may take (the transport's own default if None).
    publish_timeout: float | None = None
    #: The connection's heartbeat where the client has one (RabbitMQ's ``heartbeat``,
    #: NATS's ``ping_interval``); None: the client's default.
    heartbeat: float | None = None

    @property
    def dead_letter_channel(self) -> str:
        return f"{self.channel}.dlq"

    def router_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "retry": self.retry,
            "schema_url": None,
            "graceful_timeout": self.graceful,
            "max_body_bytes": self.max_body,
        }
        if self.dead_letter:
            options["dead_letter"] = self.dead_letter_channel
        if self.publish_timeout is not None:
            options["publish_timeout"] = self.publish_timeout
        return options

    @property
    def retry(self) -> Retry:
        return Retry(
            max_attempts=self.max_attempts,
            backoff=self.backoff,
            multiplier=2.0,
            max_backoff=self.max_backoff,
        )


@dataclass(frozen=True)
class Kind:
    name: str
    broker: str  # which private instance it runs on: "redis", "nats", "kafka", "rabbit"
    #: The in-flight window: what a killed consumer (or a lost ack) may hand over again.
    window: str
    #: Backoff cap (s) of the consumer's reconnects: recovery must be within this + 5 s.
    #: The core's consume backoff (5 s) where it restarts consuming; NATS: the client's
    #: ``reconnect_time_wait`` (2 s), since nats-py resumes the subscription itself.
    reconnect_cap: float

    def takeover(self, settings: Settings) -> float:
        """Seconds before the messages a killed consumer held go to another: the claim
        time on Redis, ``ack_wait`` on JetStream, Kafka's session timeout (10 s); a
        RabbitMQ queue requeues them when the connection drops."""
        return {"kafka": 10.0, "rabbit": 0.0}.get(self.broker, settings.idle)

    def router(self, settings: Settings) -> StreamRouter:
        if self.broker == "redis":
            from fastapi_stream.redis import RedisRouter

            return RedisRouter(
                settings.url, min_idle_time=settings.idle, **settings.router_options()
            )
        if self.broker == "nats":
            from fastapi_stream.nats import JStream, NatsRouter

            subjects = [settings.channel]
            if settings.dead_letter:
                subjects.append(settings.dead_letter_channel)
            pings: dict[str, Any] = {}
            if settings.heartbeat is not None:
                # Stale after one unanswered ping, one per heartbeat.
                pings = {"ping_interval": settings.heartbeat, "max_outstanding_pings": 1}
            return NatsRouter(
                settings.url,
                stream=JStream(stream_name(settings.channel), subjects=subjects),
                **pings,
                **settings.router_options(),
            )
        if self.broker == "kafka":
            from fastapi_stream.kafka import KafkaRouter, KafkaTopic

            topics = [KafkaTopic(settings.channel, partitions=4)]
            if settings.dead_letter:
                topics.append(KafkaTopic(settings.dead_letter_channel, partitions=1))
            return KafkaRouter(
                settings.url.removeprefix("kafka://"),
                topics=topics,
                auto_offset_reset="earliest",
                **settings.router_options(),
            )
        from fastapi_stream.rabbit import RabbitRouter

        url = settings.url
        if settings.heartbeat is not None:
            url = f"{url}?heartbeat={settings.heartbeat:g}"
        return RabbitRouter(url, **settings.router_options())

    def subscriber_options(self, settings: Settings) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of ``router.subscriber`` for this kind."""
        common: dict[str, Any] = {"prefetch": settings.prefetch, "max_workers": settings.workers}
        if self.name == "redis-list":
            from fastapi_stream.redis import ListSub

            return (), {**common, "list": ListSub(settings.channel)}
        if self.name == "redis-stream":
            from fastapi_stream.redis import StreamSub

            sub = StreamSub(settings.channel, group=settings.group, last_id="0")
            return (), {**common, "stream": sub}
        if self.broker == "nats":
            options = {"durable": settings.group, "ack_wait": settings.idle, "pull": True}
            return (settings.channel,), {**common, **options}
        if self.broker == "kafka":
            return (settings.channel,), {**common, "group_id": settings.group}
        from fastapi_stream.rabbit import RabbitQueue

        return (RabbitQueue(settings.channel, durable=True),), common

    def publish_options(self) -> dict[str, Any]:
        if self.name == "redis-list":
            return {"list": True}
        if self.name == "redis-stream":
            return {"stream": True}
        return {}


def stream_name(channel: str) -> str:
    return channel.replace(".", "-").upper()


KINDS = {
    kind.name: kind
    for kind in (
        Kind("redis-stream", "redis", "prefetch (XREADGROUP COUNT)", reconnect_cap=5.0),
        Kind("redis-list", "redis", "prefetch (items moved per take)", reconnect_cap=5.0),
        Kind("nats-js", "nats", "prefetch (pull batch, max_ack_pending)", reconnect_cap=2.0),
        Kind("kafka", "kafka", "uncommitted records per partition (≤ prefetch)", 5.0),
        Kind("rabbit", "rabbit", "prefetch (basic.qos)", reconnect_cap=5.0),
    )
}
