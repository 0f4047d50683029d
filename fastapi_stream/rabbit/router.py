"""``RabbitRouter``: a :class:`~fastapi_stream.StreamRouter` with RabbitMQ's own options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, Unpack

from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.options import split_options
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.rabbit.options import RabbitExchange, RabbitOptions, RabbitQueue, as_exchange
from fastapi_stream.rabbit.transport import RabbitTransport
from fastapi_stream.router import RouterOptions, StreamRouter

__all__ = ["RabbitRouter"]

P = ParamSpec("P")
R = TypeVar("R")


class RabbitRouterOptions(RabbitOptions, RouterOptions, total=False):
    """RabbitRouter's keyword arguments."""


class RabbitRouter(StreamRouter):
    """A ``StreamRouter`` on RabbitMQ at ``url``: keyword arguments are the connection's
    (:class:`~fastapi_stream.rabbit.RabbitOptions`) and :class:`StreamRouter`'s."""

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost:5672/",
        **options: Unpack[RabbitRouterOptions],
    ) -> None:
        connection, router = split_options(options, RabbitOptions.__optional_keys__)
        super().__init__(RabbitTransport(url, **connection), **router)

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
