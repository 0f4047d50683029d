"""NATS and JetStream (``nats://``) on nats-py: ``NatsRouter`` and its options.

Needs the ``nats`` extra: ``pip install "fastapi-stream[nats]"``.
"""

try:
    from fastapi_stream.nats.transport import KeyValue, NatsMessage, NatsRouting, NatsTransport
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is None or exc.name.split(".")[0] != "nats":
        raise
    raise ImportError(
        'fastapi_stream.nats needs nats-py: pip install "fastapi-stream[nats]"'
    ) from exc

from fastapi_stream.nats.options import (
    DeliverPolicy,
    JStream,
    KvWatch,
    NatsOptions,
    NatsPublishOptions,
    NatsSubscriberOptions,
    PullSub,
    Retention,
    Storage,
)
from fastapi_stream.nats.router import NatsRouter

__all__ = [
    "DeliverPolicy",
    "JStream",
    "KeyValue",
    "KvWatch",
    "NatsMessage",
    "NatsOptions",
    "NatsPublishOptions",
    "NatsRouter",
    "NatsRouting",
    "NatsSubscriberOptions",
    "NatsTransport",
    "PullSub",
    "Retention",
    "Storage",
]
