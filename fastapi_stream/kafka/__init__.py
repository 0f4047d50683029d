"""Apache Kafka (``kafka://``) on aiokafka: ``KafkaRouter`` and its options.

Needs the ``kafka`` extra: ``pip install "fastapi-stream[kafka]"``.
"""

try:
    from fastapi_stream.kafka.consume import KafkaSubscription
    from fastapi_stream.kafka.records import KafkaMessage, message_key
    from fastapi_stream.kafka.routing import KafkaRouting
    from fastapi_stream.kafka.transport import KafkaTransport
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is None or exc.name.split(".")[0] != "aiokafka":
        raise
    raise ImportError(
        'fastapi_stream.kafka needs aiokafka: pip install "fastapi-stream[kafka]"'
    ) from exc

from fastapi_stream.kafka.options import (
    AutoOffsetReset,
    KafkaOptions,
    KafkaPublishOptions,
    KafkaSubscriberOptions,
    KafkaTopic,
    Partition,
    RebalanceListener,
    Sasl,
    SaslMechanism,
)
from fastapi_stream.kafka.router import KafkaRouter

__all__ = [
    "AutoOffsetReset",
    "KafkaMessage",
    "KafkaOptions",
    "KafkaPublishOptions",
    "KafkaRouter",
    "KafkaRouting",
    "KafkaSubscriberOptions",
    "KafkaSubscription",
    "KafkaTopic",
    "KafkaTransport",
    "Partition",
    "RebalanceListener",
    "Sasl",
    "SaslMechanism",
    "message_key",
]
