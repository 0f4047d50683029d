"""The Redis transports of the conformance suite, one per kind of subscription.

* ``redis-stream``: streams with consumer groups, at-least-once. A stream names one key,
  so ``{param}`` patterns are refused.
* ``redis-list``: lists as work queues (reliable mode), at-least-once. Every subscriber
  of a list competes for its items, whatever its group; no patterns either.
* ``redis-channel``: pub/sub, at-most-once: no groups, no redelivery, nothing kept for
  an absent subscriber.

``min_idle_time`` is short so a stopped consumer's unsettled messages are claimed well
within the suite's waits.
"""

from __future__ import annotations

from fastapi_stream.redis import RedisTransport
from fastapi_stream.redis.options import Kind
from tests.conformance.conftest import Features, TransportCase

REDIS_URL = "redis://127.0.0.1:6379/0"


def _connect(kind: Kind) -> TransportCase:
    return TransportCase(
        f"redis-{kind}".replace("pubsub", "channel"),
        connect=lambda namespace: RedisTransport(
            REDIS_URL, default_kind=kind, min_idle_time=1.0, client_name="fs-conformance"
        ),
        features=FEATURES[kind],
        wait_timeout=5.0,
        quiet_period=0.2,
    )


FEATURES: dict[Kind, Features] = {
    "stream": Features(patterns=False),
    "list": Features(patterns=False, independent_groups=False),
    "pubsub": Features(groups=False, redelivery=False, persistent=False),
}

REDIS_STREAM = _connect("stream")
REDIS_LIST = _connect("list")
REDIS_CHANNEL = _connect("pubsub")
