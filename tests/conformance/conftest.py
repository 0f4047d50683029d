"""The transports the conformance suite runs on.

``test_conformance.py`` holds one behaviour suite, ported from Watermill's universal
Pub/Sub tests (``pubsub/tests/test_pubsub.go``, see RELIABILITY.md §2) plus fastapi_stream's
own cases. Every test takes the ``transport`` fixture, so it runs once per entry of
``CASES``. A broker adapter joins the suite by appending one entry::

    pytest.param(
        TransportCase("kafka", connect=lambda namespace: "kafka://127.0.0.1:9092",
                      features=Features(ordered=False)),
        id="kafka",
        marks=pytest.mark.kafka,
    )

What a broker cannot do is declared in its :class:`Features`. A missing feature never
skips a test: the test then asserts the weaker behaviour the transport documents
(fan-out instead of competing consumers, at-most-once instead of redelivery...).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from examples.transport.queues import QueueTransport
from fastapi_stream import StreamRouter, Transport


@dataclass(frozen=True, slots=True)
class Features:
    """What a transport guarantees; mirrors Watermill's ``tests.Features``."""

    #: Subscribers sharing a ``group`` compete for its messages (``ConsumerGroups``).
    #: Without: every subscriber receives every message (fan-out).
    groups: bool = True
    #: A nacked message (a handler error, ``msg.nack()``) is delivered again. Without: a
    #: nack drops the message (at-most-once), so there are no retries and no dead letters.
    redelivery: bool = True
    #: A group's messages outlive its consumers (``Persistent``): those published while no
    #: consumer runs, or left unsettled by a stopped one, are delivered when a consumer
    #: comes back. Without: they are lost.
    persistent: bool = True
    #: One consumer receives a channel's messages in publish order
    #: (``GuaranteedOrderWithSingleSubscriber``). Without: only the set is the same.
    ordered: bool = True
    #: ``broker.request()`` gets the handler's reply. Without: it raises a ``StreamError``
    #: (possibly ``RequestTimeout``) and never waits past its timeout.
    request_reply: bool = True
    #: A channel may hold ``{param}`` placeholders. Without (a Redis list or stream names
    #: one key): subscribing to a pattern raises ``ConfigurationError``.
    patterns: bool = True
    #: Different groups each receive every message (``ConsumerGroups``). Without (a Redis
    #: list, a work queue): all subscribers of a channel compete, whatever their group.
    independent_groups: bool = True
    #: A publish that no subscription receives raises ``PublishError`` (RabbitMQ's
    #: mandatory publishes). Without: the message is dropped silently.
    unroutable_raises: bool = False


@dataclass(frozen=True, slots=True)
class TransportCase:
    """One transport the suite runs on."""

    name: str
    #: A new connection to the broker, as a URL or a :class:`Transport`; called once for
    #: every router a test builds. ``namespace`` is unique to the test and the same for all
    #: its routers, so a router built "after a restart" reaches the same broker state.
    connect: Callable[[str], str | Transport]
    features: Features = field(default_factory=Features)
    #: What separates the segments of a channel name (``"."``; MQTT would use ``"/"``).
    separator: str = "."
    #: The bound on every wait for something that should happen.
    wait_timeout: float = 3.0
    #: How long to watch for something that must *not* happen (a redelivery, cross-talk).
    quiet_period: float = 0.1


@dataclass(slots=True)
class TransportUnderTest:
    """A transport case bound to one test: builds routers and unique channel names."""

    case: TransportCase
    namespace: str

    @property
    def features(self) -> Features:
        return self.case.features

    def router(self, **options: Any) -> StreamRouter:
        """A new router (a new "process") on this test's broker."""
        return StreamRouter(self.case.connect(self.namespace), **options)

    def channel(self, *parts: str) -> str:
        """A channel name no other test uses; ``parts`` may hold ``{param}`` placeholders."""
        return self.case.separator.join(("conf", uuid.uuid4().hex[:12], *parts))

    async def eventually(self, condition: Callable[[], object], what: str) -> None:
        """Wait until ``condition()`` is true; fail after the case's ``wait_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.case.wait_timeout
        while not condition():
            if loop.time() > deadline:
                pytest.fail(f"{self.case.name}: no {what} within {self.case.wait_timeout}s")
            await asyncio.sleep(0.005)

    async def quiet(self) -> None:
        """Give a message that must not arrive the time to arrive anyway."""
        await asyncio.sleep(self.case.quiet_period)


MEMORY = TransportCase("memory", connect=lambda namespace: f"memory://{namespace}")
#: The example transport of docs/transports.md: held to the same suite as the brokers.
EXAMPLE = TransportCase("example", connect=lambda namespace: QueueTransport(namespace))

from tests.kafka.cases import KAFKA  # noqa: E402 - likewise
from tests.mqtt.cases import MQTT  # noqa: E402 - likewise
from tests.nats.cases import NATS_CORE, NATS_JETSTREAM  # noqa: E402 - likewise
from tests.rabbit.cases import RABBIT  # noqa: E402 - it builds on the classes above
from tests.redis.cases import REDIS_CHANNEL, REDIS_LIST, REDIS_STREAM  # noqa: E402

CASES = [
    pytest.param(MEMORY, id="memory", marks=pytest.mark.memory),
    pytest.param(EXAMPLE, id="example", marks=pytest.mark.memory),
    pytest.param(RABBIT, id="rabbit", marks=pytest.mark.rabbit),
    pytest.param(NATS_JETSTREAM, id="nats", marks=pytest.mark.nats),
    pytest.param(NATS_CORE, id="nats-core", marks=pytest.mark.nats),
    pytest.param(KAFKA, id="kafka", marks=pytest.mark.kafka),
    pytest.param(REDIS_STREAM, id="redis-stream", marks=pytest.mark.redis),
    pytest.param(REDIS_LIST, id="redis-list", marks=pytest.mark.redis),
    pytest.param(REDIS_CHANNEL, id="redis-channel", marks=pytest.mark.redis),
    pytest.param(MQTT, id="mqtt", marks=pytest.mark.mqtt),
]


@pytest.fixture(params=CASES)
def transport(request: pytest.FixtureRequest) -> TransportUnderTest:
    case: TransportCase = request.param
    return TransportUnderTest(case, namespace=f"conformance-{uuid.uuid4().hex}")
