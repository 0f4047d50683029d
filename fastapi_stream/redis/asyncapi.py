"""Redis in the AsyncAPI document: what kind of key a channel is (a pub/sub channel, a
list or a stream) and, for a stream, the consumer group.

AsyncAPI reserves the ``redis`` binding without fields (``@asyncapi/specs`` ships no
schema for it), so the binding takes FastStream's names, which Redis tools built on it
read: ``channel``, ``method`` (``subscribe``, ``psubscribe``, ``lpop``, ``xreadgroup``;
``publish``, ``rpush``, ``xadd`` for a publisher), ``groupName``, ``consumerName``, with
``bindingVersion: custom``. Correlation id and reply-to travel in the message envelope's
headers (the defaults of :class:`BrokerDocs`).
"""

from __future__ import annotations

from typing import Any

from fastapi_stream.asyncapi.brokers import BrokerDocs
from fastapi_stream.asyncapi.models import JSON, Element
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import SubscriptionSpec, Transport
from fastapi_stream.redis.options import Kind, StreamSub, kind_of
from fastapi_stream.redis.routing import redis_glob, stream_group

__all__ = ["RedisDocs", "broker_docs"]

_RECEIVE = {"pubsub": "subscribe", "list": "lpop", "stream": "xreadgroup"}
_SEND = {"pubsub": "publish", "list": "rpush", "stream": "xadd"}


class RedisDocs(BrokerDocs):
    @property
    def default_kind(self) -> Kind:
        routing = self.transport.routing()
        kind: Kind = getattr(routing, "default_kind", "pubsub")
        return kind

    def server_description(self) -> str | None:
        names = {"pubsub": "pub/sub channels", "list": "lists", "stream": "streams"}
        return f"Redis, {names[self.default_kind]} unless a subscriber or publisher says"

    def bindings(self, element: Element, source: Any) -> JSON:
        if element != "channel":
            return {}
        if isinstance(source, Subscriber):
            return {"redis": self._receive(source)}
        if isinstance(source, Publisher):
            kind = kind_of(source.options, self.default_kind)
            return {
                "redis": {"channel": source.channel, "method": _SEND[kind]}
                | {"bindingVersion": "custom"}
            }
        return {}

    def _receive(self, subscriber: Subscriber) -> JSON:
        spec = SubscriptionSpec(
            channel=subscriber.channel, group=subscriber.group, options=subscriber.options
        )
        kind = kind_of(spec.options, self.default_kind)
        found: JSON = {"channel": spec.channel.template, "method": _RECEIVE[kind]}
        if kind == "pubsub":
            glob = redis_glob(spec)
            if glob is not None:
                found.update(channel=glob, method="psubscribe")
        elif kind == "stream":
            group = stream_group(spec)
            if group is not None:
                found["groupName"] = group
            settings = spec.options.get("stream")
            if isinstance(settings, StreamSub) and settings.consumer:
                found["consumerName"] = settings.consumer
        return found | {"bindingVersion": "custom"}


def broker_docs(transport: Transport, asyncapi_version: str) -> RedisDocs:
    return RedisDocs(transport, asyncapi_version)
