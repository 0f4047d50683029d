"""Redis for fastapi_stream: pub/sub channels, lists and streams (``redis://``).

Needs redis-py: ``pip install "fastapi-stream[redis]"``.
"""

try:
    from fastapi_stream.redis.transport import RedisTransport
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is None or exc.name.split(".")[0] != "redis":
        raise
    raise ImportError(
        'fastapi_stream.redis needs redis-py: pip install "fastapi-stream[redis]"'
    ) from exc

from fastapi_stream.redis.options import (
    ListSub,
    PubSub,
    RedisOptions,
    RedisPublishOptions,
    RedisSubscriberOptions,
    StreamSub,
)
from fastapi_stream.redis.router import RedisRouter
from fastapi_stream.redis.routing import RedisRouting

__all__ = [
    "ListSub",
    "PubSub",
    "RedisOptions",
    "RedisPublishOptions",
    "RedisRouter",
    "RedisRouting",
    "RedisSubscriberOptions",
    "RedisTransport",
    "StreamSub",
]
