"""Kafka in the AsyncAPI document: a channel's topic (with the partitions and replicas of a
topic the transport declares), a subscriber's consumer group and the client id.

Bindings ``kafka`` 0.5.0 in AsyncAPI 3.0.0 documents, 0.4.0 in 2.6.0 ones. Correlation id
and reply-to travel in record headers (the defaults of :class:`BrokerDocs`).
"""

from __future__ import annotations

from typing import Any

from fastapi_stream.asyncapi.brokers import BrokerDocs
from fastapi_stream.asyncapi.models import JSON, Element
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import Transport

__all__ = ["KafkaDocs", "broker_docs"]


class KafkaDocs(BrokerDocs):
    @property
    def version(self) -> str:
        return "0.5.0" if self.v3 else "0.4.0"

    def server_description(self) -> str | None:
        return f"Kafka, client id {getattr(self.transport, 'client_id', 'fastapi-stream')!r}"

    def bindings(self, element: Element, source: Any) -> JSON:
        if element == "channel" and source is not None:
            return self._channel(source)
        if element == "operation" and isinstance(source, Subscriber):
            operation: JSON = {
                "clientId": _one_of(getattr(self.transport, "client_id", "fastapi-stream")),
                "bindingVersion": self.version,
            }
            if source.group:
                operation["groupId"] = _one_of(source.group)
            return {"kafka": operation}
        return {}

    def _channel(self, source: Any) -> JSON:
        topic = str(source.channel.template if isinstance(source, Subscriber) else source.channel)
        options = getattr(source, "options", {}) or {}
        if "{" in topic or options.get("pattern"):
            return {}  # a pattern names many topics, none of them this one
        binding: JSON = {"topic": topic, "bindingVersion": self.version}
        topics = getattr(self.transport, "topics", ())
        declared = next((t for t in topics if t.name == topic), None)
        if declared is not None:
            binding["partitions"] = declared.partitions
            if declared.replication is not None:
                binding["replicas"] = declared.replication
        return {"kafka": binding}


def _one_of(value: str) -> JSON:
    """A binding field that is a schema: this one string."""
    return {"type": "string", "enum": [value]}


def broker_docs(transport: Transport, asyncapi_version: str) -> KafkaDocs:
    return KafkaDocs(transport, asyncapi_version)
