"""NATS in the AsyncAPI document: a subscriber's queue group (``nats`` operation binding
0.1.0, the only NATS binding there is), and JetStream's stream, durable consumer, pull
mode and key-value bucket as extensions of that binding, which has no fields for them.

Correlation id and reply-to travel in message headers (the defaults of
:class:`BrokerDocs`).
"""

from __future__ import annotations

from typing import Any

from fastapi_stream.asyncapi.brokers import BrokerDocs
from fastapi_stream.asyncapi.models import JSON, Element
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import Transport
from fastapi_stream.nats.options import JStream, KvWatch

__all__ = ["NatsDocs", "broker_docs"]


class NatsDocs(BrokerDocs):
    def server_description(self) -> str | None:
        stream = self._stream_name(getattr(self.transport, "stream", None))
        return f"NATS, JetStream stream {stream!r} by default" if stream else "NATS"

    def bindings(self, element: Element, source: Any) -> JSON:
        if element != "operation" or not isinstance(source, Subscriber | Publisher):
            return {}
        options = source.options
        found: JSON = {}
        stream = options.get("stream")
        if isinstance(source, Subscriber):
            if source.group:
                found["queue"] = source.group
            watch = options.get("kv_watch")
            if watch:
                found["x-kv-bucket"] = watch.bucket if isinstance(watch, KvWatch) else str(watch)
            if options.get("durable"):
                found["x-durable"] = str(options["durable"])
            if options.get("pull"):
                found["x-pull"] = True
            if not watch:  # the router's default stream, for subscribers
                stream = stream or getattr(self.transport, "stream", None)
        if self._stream_name(stream):
            found["x-stream"] = self._stream_name(stream)
        if not found:
            return {}
        return {"nats": {**found, "bindingVersion": "0.1.0"}}

    @staticmethod
    def _stream_name(stream: Any) -> str | None:
        if isinstance(stream, JStream):
            return stream.name
        return str(stream) if stream else None


def broker_docs(transport: Transport, asyncapi_version: str) -> NatsDocs:
    return NatsDocs(transport, asyncapi_version)
