"""``RedisRouter``: a :class:`StreamRouter` on Redis whose ``subscriber`` and
``publisher`` take FastStream's Redis names: ``channel=``, ``list=`` and ``stream=``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, Unpack

from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.options import split_options
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.redis.options import ListSub, PubSub, RedisOptions, StreamSub
from fastapi_stream.redis.transport import RedisTransport
from fastapi_stream.router import RouterOptions, StreamRouter

__all__ = ["RedisRouter"]

P = ParamSpec("P")
R = TypeVar("R")


class RedisRouterOptions(RedisOptions, RouterOptions, total=False):
    """RedisRouter's keyword arguments."""


class RedisRouter(StreamRouter):
    """A ``StreamRouter`` connected to Redis at ``url``: keyword arguments are the
    connection's (:class:`~fastapi_stream.redis.RedisOptions`) and :class:`StreamRouter`'s."""

    def __init__(
        self, url: str = "redis://localhost:6379", **options: Unpack[RedisRouterOptions]
    ) -> None:
        connection, router = split_options(options, RedisOptions.__optional_keys__)
        super().__init__(RedisTransport(url, **connection), **router)

    def subscriber(
        self,
        channel: str | PubSub | None = None,
        *,
        list: str | ListSub | None = None,  # FastStream's name
        stream: str | StreamSub | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Endpoint[P, R]]:
        """Consume a ``channel`` (a bare name of the router's default kind, pub/sub unless
        changed; ``"orders.{region}"`` or ``PubSub("logs.*", pattern=True)`` for pub/sub
        patterns), a ``list`` (work queue) or a ``stream`` (consumer group:
        ``StreamSub("orders", group="billing")`` or ``group=``).

        Everything else (``group``, ``retry``, ``dead_letter``, ``max_workers``...) is
        :meth:`StreamRouter.subscriber`'s.
        """
        kind, target = _choose(channel, list, stream)
        if isinstance(target, str):
            if kind != "pubsub":  # a bare name takes the router's default kind
                options[kind] = True
            return super().subscriber(target, **options)
        if isinstance(target, StreamSub) and target.group is not None:
            options.setdefault("group", target.group)
        options[kind] = target
        return super().subscriber(target.name, **options)

    def publisher(
        self,
        channel: str | None = None,
        *,
        list: str | None = None,  # FastStream's name
        stream: str | None = None,
        maxlen: int | None = None,
        **options: Any,
    ) -> Publisher:
        """A publisher to a ``channel`` (a bare name of the default kind), a ``list``
        (RPUSH) or a ``stream`` (XADD, trimmed to ``maxlen`` entries when given)."""
        kind, name = _choose(channel, list, stream)
        assert isinstance(name, str)
        if maxlen is not None:
            if kind != "stream":
                raise ConfigurationError("maxlen= trims streams only")
            options["maxlen"] = maxlen
        if kind != "pubsub":  # a bare name takes the router's default kind
            options[kind] = True
        return super().publisher(name, **options)


_Target = str | PubSub | ListSub | StreamSub


def _choose(
    channel: _Target | None, list_: _Target | None, stream: _Target | None
) -> tuple[str, _Target]:
    chosen = [(k, v) for k, v in (("pubsub", channel), ("list", list_), ("stream", stream)) if v]
    if len(chosen) != 1:
        raise ConfigurationError("give exactly one of a channel, list= or stream=")
    return chosen[0]
