"""``RabbitRouter``: a :class:`~fastapi_stream.StreamRouter` with RabbitMQ's own options."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.rabbit.options import RabbitExchange, RabbitQueue, as_exchange
from fastapi_stream.rabbit.transport import RabbitTransport
from fastapi_stream.router import StreamRouter

__all__ = ["RabbitRouter"]

P = ParamSpec("P")
R = TypeVar("R")


class RabbitRouter(StreamRouter):
    """A StreamRouter on RabbitMQ at ``url``.

    ``exchange`` is the exchange publishes go to and subscribers bind to unless they name
    their own (``None``: RabbitMQ's default exchange, which routes by queue name);
    ``queue_arguments`` go to every queue declared by name. The other keyword arguments
    are :class:`RabbitTransport`'s and :class:`~fastapi_stream.StreamRouter`'s.
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        *,
        exchange: str | RabbitExchange | None = None,
        queue_arguments: Mapping[str, Any] | None = None,
        publish_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        connection_name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **router_options: Any,
    ) -> None:
        transport = RabbitTransport(
            url,
            exchange=exchange,
            queue_arguments=queue_arguments,
            publish_timeout=publish_timeout,
            connect_timeout=connect_timeout,
            reconnect_interval=reconnect_interval,
            connection_name=connection_name,
            ssl_context=ssl_context,
        )
        super().__init__(transport, **router_options)

    def subscriber(  # type: ignore[override]
        self,
        queue: str | RabbitQueue,
        exchange: str | RabbitExchange | None = None,
        *,
        routing_key: str | None = None,
        bind_arguments: Mapping[str, Any] | None = None,
        consume_arguments: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Endpoint[P, R]]:
        """Consume ``queue`` (a name or a :class:`RabbitQueue`), declared and bound to
        ``exchange`` at startup.

        ``routing_key`` is the binding key (default: the queue's ``routing_key``, else its
        name); ``{param}`` parts bind as ``*`` on a topic exchange and reach the handler
        as path parameters. ``bind_arguments`` match headers on a headers exchange;
        ``consume_arguments`` go to basic.consume (``{"x-stream-offset": "first"}``).
        Subscribers of one queue compete for its messages. Every other keyword
        (``retry``, ``dead_letter``, ``max_workers``, ``prefetch``...) is
        :meth:`StreamRouter.subscriber`'s.
        """
        name = queue.name if isinstance(queue, RabbitQueue) else queue
        key = routing_key or (queue.routing_key if isinstance(queue, RabbitQueue) else None)
        # The channel is what a delivery's routing key is matched against for path
        # parameters: the binding key when it has some, else the queue's name.
        channel = key if key and ChannelPattern.parse(key).is_pattern else name
        extra: dict[str, Any] = {}
        if isinstance(queue, RabbitQueue) or channel != name:
            extra["queue"] = queue
        if exchange is not None:
            extra["exchange"] = exchange
        if key:
            extra["routing_key"] = key
        if bind_arguments:
            extra["bind_arguments"] = bind_arguments
        if consume_arguments:
            extra["consume_arguments"] = consume_arguments
        return super().subscriber(channel, **extra, **options)

    def publisher(  # type: ignore[override]
        self,
        routing_key: str | RabbitQueue,
        exchange: str | RabbitExchange | None = None,
        *,
        mandatory: bool = True,
        persist: bool = True,
        priority: int | None = None,
        expiration: float | None = None,
        message_type: str | None = None,
        **options: Any,
    ) -> Publisher:
        """A publisher to ``routing_key`` on ``exchange`` (the router's by default).

        ``mandatory`` publishes that no queue gets raise
        :class:`~fastapi_stream.PublishError`; ``persist`` stores messages on disk;
        ``expiration`` is in seconds. Other keywords are
        :meth:`StreamRouter.publisher`'s. A :class:`RabbitQueue` (FastStream's spelling)
        publishes to that queue: its name through the default exchange, unless an
        ``exchange`` is given.
        """
        if isinstance(routing_key, RabbitQueue):
            exchange = "" if exchange is None else exchange
            routing_key = routing_key.name
        as_exchange(exchange)  # a wrong type fails here, not at the first publish
        extra: dict[str, Any] = {"mandatory": mandatory, "persist": persist}
        if exchange is not None:
            extra["exchange"] = exchange
        for name, value in (
            ("priority", priority),
            ("expiration", expiration),
            ("message_type", message_type),
        ):
            if value is not None:
                extra[name] = value
        return super().publisher(routing_key, **extra, **options)
