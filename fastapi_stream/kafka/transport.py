"""``kafka://``: Apache Kafka and Kafka-protocol brokers through aiokafka.

One producer per transport (acks=all by default), an admin client for declaring topics
and answering pings, a consumer per subscription (:mod:`fastapi_stream.kafka.consume`),
and for requests a reply topic of the transport's own, read from its end without a group.
A delivery's results go out together (``publish_many``): queued in the producer's batches,
then confirmed together.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Unpack
from urllib.parse import parse_qsl, unquote, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    PublishError,
    RequestTimeout,
    TransportError,
    client_errors,
    reason,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.options import check_options
from fastapi_stream.core.replies import Replies
from fastapi_stream.core.transport import (
    Deliver,
    Routing,
    Subscription,
    SubscriptionSpec,
    Transport,
)
from fastapi_stream.core.url import redact
from fastapi_stream.kafka.consume import FETCH_WAIT_MS, KafkaSubscription
from fastapi_stream.kafka.options import (
    KafkaOptions,
    KafkaPublishOptions,
    KafkaTopic,
    Sasl,
    security_settings,
)
from fastapi_stream.kafka.records import incoming, outgoing_headers, quietly, stop_client
from fastapi_stream.kafka.routing import KafkaRouting

__all__ = ["KafkaRouting", "KafkaTransport"]

logger = logging.getLogger("fastapi_stream.kafka")
#: The client's errors, raised as PublishError or TransportError.
_ERRORS = (KafkaError, OSError)
#: Pause between failed reads of the reply topic (the client reconnects meanwhile).
_REPLY_READ_BACKOFF = 1.0


class _ReplyTopic:
    """The reply topic of one transport, read from its end without a group; each reply
    goes to the request waiting under its correlation id (``core/replies.py``)."""

    def __init__(self, topic: str, client: AIOKafkaConsumer) -> None:
        self.topic = topic
        self.client = client
        self.waiting: Replies[StreamMessage] = Replies()
        self.task = asyncio.create_task(self._read(), name=f"kafka replies {topic}")

    async def _read(self) -> None:
        while True:
            try:
                batches = await self.client.getmany(timeout_ms=FETCH_WAIT_MS)
            except ConsumerStoppedError:
                return
            except (KafkaError, OSError) as exc:
                logger.warning("reading replies from %s failed: %s", self.topic, reason(exc))
                await asyncio.sleep(_REPLY_READ_BACKOFF)
                continue
            for records in batches.values():
                for record in records:
                    reply: StreamMessage = incoming(record)
                    self.waiting.resolve(reply.correlation_id, reply)

    async def close(self, error: Exception) -> None:
        self.waiting.fail_all(error)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await stop_client(self.client)


def _parse_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


#: Subscriber options that are aiokafka consumer settings.
_SUBSCRIBER_SETTINGS = (
    "auto_offset_reset",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "max_poll_interval_ms",
    "isolation_level",
    "group_instance_id",
)

#: Query parameters a ``kafka://`` URL accepts, with the type of their value.
_URL_OPTIONS: dict[str, type] = {
    "client_id": str,
    "tls": bool,
    "sasl_mechanism": str,
    "acks": str,
    "compression_type": str,
    "linger_ms": int,
    "enable_idempotence": bool,
    "request_timeout_ms": int,
    "metadata_max_age_ms": int,
    "session_timeout_ms": int,
    "heartbeat_interval_ms": int,
    "max_poll_interval_ms": int,
    "auto_offset_reset": str,
    "publish_timeout": float,
    "connect_timeout": float,
}


class KafkaTransport(Transport):
    """A connection to a Kafka cluster, ``KafkaTransport("host:9092,host2:9092")``, with
    :class:`~fastapi_stream.kafka.KafkaOptions`."""

    schemes: ClassVar[tuple[str, ...]] = ("kafka",)
    publish_options = KafkaPublishOptions.__optional_keys__

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        **options: Unpack[KafkaOptions],
    ) -> None:
        check_options(type(self).__name__, options, KafkaOptions.__optional_keys__)
        servers = (
            [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
            if isinstance(bootstrap_servers, str)
            else list(bootstrap_servers)
        )
        if not servers:
            raise ConfigurationError("KafkaTransport needs at least one bootstrap server")
        if any("@" in server or "://" in server for server in servers):
            raise ConfigurationError(
                "bootstrap servers are host:port pairs; give credentials as sasl=Sasl(...) "
                "(or use a kafka://user:password@host:9092 URL with StreamRouter)"
            )
        auto_offset_reset = options.get("auto_offset_reset", "latest")
        if auto_offset_reset not in ("latest", "earliest"):
            raise ConfigurationError("auto_offset_reset must be 'latest' or 'earliest'")
        self.servers = servers
        self.client_id = options.get("client_id", "fastapi-stream")
        self.publish_timeout = options.get("publish_timeout", 10.0)
        self.connect_timeout = options.get("connect_timeout", 10.0)
        self.topics = list(options.get("topics", ()))
        self.reply_topic_prefix = options.get("reply_topic_prefix", "fastapi-stream.replies")
        self._common: dict[str, Any] = {
            "bootstrap_servers": servers,
            "client_id": self.client_id,
            "request_timeout_ms": options.get("request_timeout_ms", 40_000),
            "metadata_max_age_ms": options.get("metadata_max_age_ms", 300_000),
            **security_settings(options.get("sasl"), options.get("tls", False), self.describe()),
        }
        self._producer_options: dict[str, Any] = {
            "acks": options.get("acks", "all"),
            "compression_type": options.get("compression_type"),
            "linger_ms": options.get("linger_ms", 0),
            "enable_idempotence": options.get("enable_idempotence", False),
            **(options.get("producer_options") or {}),
        }
        session_timeout_ms = options.get("session_timeout_ms", 10_000)
        # aiokafka settings the user passed: the reply consumer takes them too (a shorter
        # fetch_max_wait_ms, say, where the broker answers a waiting fetch only at its end).
        self._passed_consumer_options = dict(options.get("consumer_options") or {})
        self._consumer_options: dict[str, Any] = {
            "session_timeout_ms": session_timeout_ms,
            # Kafka wants several heartbeats per session timeout.
            "heartbeat_interval_ms": min(
                options.get("heartbeat_interval_ms", 3_000), max(1, session_timeout_ms // 3)
            ),
            "max_poll_interval_ms": options.get("max_poll_interval_ms", 300_000),
            "auto_offset_reset": auto_offset_reset,
            **self._passed_consumer_options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumers: list[KafkaSubscription] = []
        self._replies: _ReplyTopic | None = None
        self._leave_lock: asyncio.Lock | None = None
        self._reply_setup: asyncio.Task[_ReplyTopic] | None = None

    @classmethod
    def from_url(cls, url: str) -> KafkaTransport:
        """``kafka://[user:password@]host:9092[,host2:9092][?option=value&...]``.

        Credentials in the URL mean SASL (``sasl_mechanism=`` picks SCRAM), ``tls=true``
        turns TLS on, and the other query options are those of the constructor
        (``client_id``, ``acks``, ``session_timeout_ms``...).
        """
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        options: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            kind = _URL_OPTIONS.get(key)
            if kind is None:
                known = ", ".join(sorted(_URL_OPTIONS))
                raise ConfigurationError(
                    f"{redact(url)}: unknown option {key!r}; kafka:// URLs accept {known}"
                )
            try:
                options[key] = _parse_bool(value) if kind is bool else kind(value)
            except ValueError as exc:
                raise ConfigurationError(f"{redact(url)}: bad value for {key!r}") from exc
        if options.get("acks") in ("0", "1"):
            options["acks"] = int(options["acks"])
        mechanism = options.pop("sasl_mechanism", "PLAIN").upper()
        if userinfo:
            user, _, password = userinfo.partition(":")
            options["sasl"] = Sasl(unquote(user), unquote(password), mechanism=mechanism)
        if not hosts:
            raise ConfigurationError(f"{redact(url)}: no broker address; use kafka://host:9092")
        return cls(hosts, **options)

    def describe(self) -> str:
        return f"kafka://{','.join(self.servers)}"

    def routing(self) -> Routing:
        return KafkaRouting()

    # -- connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._common, **self._producer_options)
        admin = AIOKafkaAdminClient(**self._common)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await producer.start()
                await admin.start()
        except Exception as exc:
            await stop_client(producer)
            await quietly(admin.close())
            raise TransportError(
                f"cannot connect to Kafka at {self.describe()}: {reason(exc)}"
            ) from exc
        self._producer, self._admin = producer, admin
        self._leave_lock = asyncio.Lock()
        if self.topics:
            await self.declare(self.topics)

    async def declare(self, topics: Sequence[KafkaTopic]) -> None:
        """Create the ``topics`` that do not exist yet."""
        admin = self._require_admin()
        new = [
            NewTopic(
                topic.name,
                topic.partitions,
                topic.replication if topic.replication is not None else 1,
                topic_configs=dict(topic.config),
            )
            for topic in topics
        ]
        async with client_errors("creating topics", _ERRORS, broker="Kafka", error=TransportError):
            response = await admin.create_topics(new)
        for error in getattr(response, "topic_errors", ()):
            name, code = error[0], error[1]
            if code not in (0, 36):  # 36: the topic already exists
                message = error[2] if len(error) > 2 else ""
                raise TransportError(f"could not create Kafka topic {name!r}: {code} {message}")

    async def close(self) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(consumer.close() for consumer in consumers))
        if self._reply_setup is not None:
            self._reply_setup.cancel()
            await asyncio.gather(self._reply_setup, return_exceptions=True)
            self._reply_setup = None
        replies, self._replies = self._replies, None
        if replies is not None:
            await replies.close(BrokerNotConnected(f"{self.describe()} was closed"))
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if replies is not None and admin is not None:
            await quietly(admin.delete_topics([replies.topic]))
        if producer is not None:
            await stop_client(producer)
        if admin is not None:
            await quietly(admin.close())

    async def ping(self, timeout: float) -> bool:
        admin = self._admin
        if admin is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await admin.describe_topics([])
        except Exception:
            return False
        return True

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        return self._producer

    def _require_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise BrokerNotConnected(f"{self.describe()} is not connected; start the broker first")
        return self._admin

    # -- publishing ---------------------------------------------------------------------

    async def _send(self, producer: AIOKafkaProducer, message: OutgoingMessage) -> Any:
        """Queue ``message`` in the producer; returns the future of its confirmation."""
        options = message.options
        key = options.get("key")
        # None encodes to an empty body without content type: a tombstone (null value),
        # which only means something with a key (Kafka refuses a record with neither);
        # without one (a handler's None result, the reply to a request) the value is empty.
        tombstone = not message.body and message.content_type is None and key is not None
        value = None if tombstone else message.body
        return await producer.send(
            message.channel,
            value,
            key=key.encode() if isinstance(key, str) else key,
            partition=options.get("partition"),
            timestamp_ms=options.get("timestamp_ms"),
            headers=outgoing_headers(message),
        )

    async def publish(self, message: OutgoingMessage) -> None:
        producer = self._require_producer()
        async with client_errors(
            f"a publish to {message.channel!r}",
            _ERRORS,
            broker="Kafka",
            timeout=self.publish_timeout,
        ):
            await (await self._send(producer, message))

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Queue every message (in order: they travel in the producer's batches), then
        wait for the broker to confirm them all; raise ``PublishError`` if one failed."""
        producer = self._require_producer()
        what = f"{len(messages)} publish(es) to {sorted({m.channel for m in messages})}"
        async with client_errors(what, _ERRORS, broker="Kafka", timeout=self.publish_timeout):
            sent = [await self._send(producer, message) for message in messages]
            results = await asyncio.gather(*sent, return_exceptions=True)
        failed = [result for result in results if isinstance(result, BaseException)]
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(messages)} publishes failed: {reason(failed[0])}"
            ) from failed[0]

    # -- request / reply ----------------------------------------------------------------

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        self._require_producer()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                replies = await self._reply_topic()
        except TimeoutError:
            raise RequestTimeout(
                f"no reply to a request on {message.channel!r} within {timeout}s"
            ) from None
        wait = max(0.0, deadline - loop.time())
        return await replies.waiting.request(message, replies.topic, wait, self.publish)

    async def _reply_topic(self) -> _ReplyTopic:
        """This transport's reply consumer, set up by the first request; a request that
        times out during the setup leaves it running for the next one."""
        if self._replies is not None:
            return self._replies
        if self._reply_setup is None or self._reply_setup.done():
            self._reply_setup = asyncio.create_task(self._open_replies())
        return await asyncio.shield(self._reply_setup)

    async def _open_replies(self) -> _ReplyTopic:
        topic = f"{self.reply_topic_prefix}.{uuid.uuid4().hex}"
        try:
            await self.declare([KafkaTopic(topic, partitions=1)])
        except TransportError as exc:
            logger.debug("reply topic %s left to auto-creation: %s", topic, exc)
        client = AIOKafkaConsumer(
            **{**self._common, **self._passed_consumer_options},
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        await client.start()
        try:
            client.subscribe([topic])
            for _ in range(100):  # assigned by aiokafka itself, without a signal
                if client.assignment():
                    break
                await asyncio.sleep(0.02)
            for tp in client.assignment():
                await client.position(tp)  # from here on, every reply is read
        except BaseException:
            await stop_client(client)
            raise
        self._replies = _ReplyTopic(topic, client)
        return self._replies

    # -- subscribing --------------------------------------------------------------------

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        self._require_producer()
        options = spec.options
        if options.get("group_instance_id") and spec.group is None:
            raise ConfigurationError(
                f"group_instance_id= on {spec.channel} needs a group_id: static membership "
                "is membership of a consumer group"
            )
        settings = {
            **self._common,
            **self._consumer_options,
            **{key: options[key] for key in _SUBSCRIBER_SETTINGS if key in options},
            **options.get("consumer_options", {}),
        }
        subscription = KafkaSubscription(
            settings,
            spec,
            known_topics=await self._known_topics(),
            leave_lock=self._leave_lock or asyncio.Lock(),
        )
        async with client_errors(
            f"subscribing to {spec.channel}", _ERRORS, broker="Kafka", error=TransportError
        ):
            await subscription.start()
        self._consumers.append(subscription)
        return subscription

    async def _known_topics(self) -> set[str]:
        """Topics that exist now: a topic created later is read from its beginning."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                return set(await self._require_admin().list_topics())
        except Exception as exc:
            logger.debug("could not list topics: %s", reason(exc))
            return set()
