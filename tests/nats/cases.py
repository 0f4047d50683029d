"""The NATS transports of the conformance suite.

``nats`` runs every subscriber as a JetStream consumer on one memory stream that takes
the suite's subjects (at-least-once). ``nats-core`` uses core subjects and queue groups:
at-most-once, so a nack drops the message and nothing waits for an absent consumer.
"""

from __future__ import annotations

from fastapi_stream.nats import JStream, NatsTransport
from tests.conformance.conftest import Features, TransportCase

NATS_URL = "nats://127.0.0.1:4222"

#: Takes every channel the conformance suite makes (``conf.<id>...``).
CONFORMANCE_STREAM = JStream(
    "fastapi_stream_conformance", subjects=["conf.>"], storage="memory", max_age=600
)

NATS_JETSTREAM = TransportCase(
    "nats",
    connect=lambda namespace: NatsTransport(NATS_URL, stream=CONFORMANCE_STREAM),
    wait_timeout=5.0,
    quiet_period=0.2,
)

NATS_CORE = TransportCase(
    "nats-core",
    connect=lambda namespace: NATS_URL,
    features=Features(redelivery=False, persistent=False),
    wait_timeout=5.0,
    quiet_period=0.2,
)
