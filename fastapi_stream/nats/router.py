"""``NatsRouter``: a :class:`~fastapi_stream.StreamRouter` on NATS with typed NATS options."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, Unpack

from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.options import given, split_options
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.nats.options import DeliverPolicy, JStream, KvWatch, NatsOptions, PullSub
from fastapi_stream.nats.transport import KeyValue, NatsTransport
from fastapi_stream.router import RouterOptions, StreamRouter

__all__ = ["NatsRouter"]

P = ParamSpec("P")
R = TypeVar("R")


class NatsRouterOptions(NatsOptions, RouterOptions, total=False):
    """NatsRouter's keyword arguments."""


class NatsRouter(StreamRouter):
    """A ``StreamRouter`` connected to NATS at ``servers`` (one URL, several separated by
    commas, or a list): keyword arguments are the connection's
    (:class:`~fastapi_stream.nats.NatsOptions`) and :class:`StreamRouter`'s."""

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://localhost:4222",
        **options: Unpack[NatsRouterOptions],
    ) -> None:
        connection, router = split_options(options, NatsOptions.__optional_keys__)
        self.transport = NatsTransport(servers, **connection)
        super().__init__(self.transport, **router)

    def subscriber(
        self,
        channel: str | None = None,
        *,
        queue: str | None = None,
        stream: str | JStream | None = None,
        durable: str | None = None,
        pull: bool | PullSub = False,
        deliver_policy: DeliverPolicy | None = None,
        ack_wait: float | None = None,
        max_deliver: int | None = None,
        inactive_threshold: float | None = None,
        kv_watch: str | KvWatch | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Endpoint[P, R]]:
        """Consume the subject ``channel`` (``*`` and ``>`` wildcards, ``{param}`` path
        parameters) into the decorated function.

        ``queue`` is the NATS queue group (the same as ``group=``): subscribers in one
        group share its messages. With ``stream`` (or the router's default stream) the
        subscriber is a JetStream consumer: a push consumer, or a pull consumer with
        ``pull=True``/``PullSub(...)``; ``durable`` names it so that it outlives the
        app (a ``group`` makes one too), and ``ack_wait``, ``max_deliver``,
        ``deliver_policy`` and ``inactive_threshold`` are its settings. ``kv_watch``
        watches a key-value bucket instead: ``channel`` is then the key pattern. Other
        keyword arguments are :meth:`StreamRouter.subscriber`'s (``retry``,
        ``dead_letter``, ``max_workers``...).
        """
        if queue is not None:
            if options.get("group") not in (None, queue):
                raise ConfigurationError(f"subscriber {channel!r}: give queue= or group=, not both")
            options["group"] = queue
        nats_options = given(
            stream=stream,
            durable=durable,
            pull=pull or None,
            deliver_policy=deliver_policy,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            inactive_threshold=inactive_threshold,
            kv_watch=kv_watch,
        )
        return super().subscriber(channel, **options, **nats_options)

    def publisher(
        self,
        channel: str | None = None,
        *,
        stream: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Publisher:
        """A publisher to the subject ``channel``; with ``stream`` every publish goes
        through JetStream and waits up to ``timeout`` seconds for its ack."""
        return super().publisher(
            channel, headers=headers, **options, **given(stream=stream, timeout=timeout)
        )

    async def key_value(self, bucket: str, *, declare: bool = True) -> KeyValue:
        """The nats-py handle of the key-value ``bucket`` (created when missing with
        ``declare``); the router's broker must be connected."""
        return await self.transport.key_value(bucket, declare=declare)
