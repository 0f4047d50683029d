"""The Kafka entry of the conformance suite.

Topics are auto-created by the broker (tansu makes 4 partitions), so messages without a
key spread over partitions: order holds per partition, not per topic. Consumer groups
use a short session timeout: a Kafka-protocol broker takes about that long to settle a
group each time a member joins. Group ids are cluster-wide in Kafka, so each test gets
its own (the suite reuses names like ``workers`` in every test).
"""

from __future__ import annotations

from dataclasses import replace

from fastapi_stream import Subscription, SubscriptionSpec
from fastapi_stream.core.transport import Deliver
from fastapi_stream.kafka import KafkaTransport
from tests.conformance.conftest import Features, TransportCase

KAFKA_SERVERS = "127.0.0.1:9092"
#: Groups settle in about a session timeout on tansu; keep it short in tests.
FAST_GROUPS = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 250}


class NamespacedKafka(KafkaTransport):
    """A transport whose consumer group ids are prefixed with the test's namespace."""

    def __init__(self, namespace: str) -> None:
        super().__init__(KAFKA_SERVERS, **FAST_GROUPS)  # type: ignore[arg-type]
        self.namespace = namespace

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        if spec.group is not None:
            spec = replace(spec, group=f"{self.namespace}.{spec.group}")
        return await super().subscribe(spec, deliver)


KAFKA = TransportCase(
    "kafka",
    connect=NamespacedKafka,
    # Everything but a topic-wide order: groups compete, nacks seek back, committed
    # offsets outlive consumers, request/reply has a reply topic per transport.
    features=Features(ordered=False),
    wait_timeout=10.0,
    quiet_period=0.3,
)
