"""The RabbitMQ entry of the conformance suite.

Each test gets a topic exchange of its own as the router's exchange, so channel names
route like topics (``orders.{region}`` binds ``orders.*``) and a ``group`` is a queue of
its own (``<channel>.<group>``) bound to it. Queues expire a minute after their last
consumer left, and the exchange goes with its last binding: the shared broker stays
clean without a teardown.
"""

from __future__ import annotations

from fastapi_stream.rabbit import ExchangeType, RabbitExchange, RabbitTransport
from tests.conformance.conftest import Features, TransportCase

URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Unused test queues are deleted by RabbitMQ after this many milliseconds.
QUEUE_EXPIRES_MS = 60_000


def connect(namespace: str) -> RabbitTransport:
    return RabbitTransport(
        URL,
        exchange=RabbitExchange(
            f"conf.{namespace}", type=ExchangeType.TOPIC, durable=False, auto_delete=True
        ),
        queue_arguments={"x-expires": QUEUE_EXPIRES_MS},
        connection_name=f"fastapi-stream tests {namespace}",
    )


RABBIT = TransportCase(
    "rabbit",
    connect=connect,
    # Everything holds: competing consumers on one queue, a queue per group, redelivery
    # of nacked and unsettled messages, durable queues, per-queue order, direct reply-to;
    # and publishes are mandatory, so one that reaches no queue raises.
    features=Features(unroutable_raises=True),
)
