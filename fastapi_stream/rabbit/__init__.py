"""RabbitMQ (``amqp://``, ``amqps://``) on aio-pika: ``pip install "fastapi-stream[rabbit]"``."""

try:
    from fastapi_stream.rabbit.transport import RabbitMessage, RabbitTransport
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is not None and exc.name.split(".")[0] in {"aio_pika", "aiormq", "pamqp"}:
        raise ImportError(
            'fastapi_stream.rabbit needs aio-pika: pip install "fastapi-stream[rabbit]"'
        ) from exc
    raise

from fastapi_stream.rabbit.options import (
    ExchangeType,
    PublishOptions,
    QueueType,
    RabbitExchange,
    RabbitOptions,
    RabbitQueue,
)
from fastapi_stream.rabbit.router import RabbitRouter
from fastapi_stream.rabbit.routing import RabbitRouting

__all__ = [
    "ExchangeType",
    "PublishOptions",
    "QueueType",
    "RabbitExchange",
    "RabbitMessage",
    "RabbitOptions",
    "RabbitQueue",
    "RabbitRouter",
    "RabbitRouting",
    "RabbitTransport",
]
