"""Reading one broker into a :class:`~fastapi_stream.asyncapi.models.Spec`: its server,
a receive operation per subscriber (with a reply channel when its handler returns a value)
and a send operation per publisher, with the broker's own bindings."""

from __future__ import annotations

import enum
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi_stream.asyncapi import servers
from fastapi_stream.asyncapi.brokers import docs_for
from fastapi_stream.asyncapi.models import JSON, Channel, Message, Operation, Server, Spec
from fastapi_stream.asyncapi.schemas import SchemaSet, component_name, renamed_model
from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber

if TYPE_CHECKING:
    from fastapi_stream.router import StreamRouter

__all__ = ["BrokerReader", "unique"]


class BrokerReader:
    """Reads one broker: its server, then a receive operation per subscriber and a send
    operation per publisher."""

    def __init__(
        self,
        spec: Spec,
        broker: StreamBroker,
        router: StreamRouter | None,
        schemas: SchemaSet,
        asyncapi_version: str,
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.schemas = schemas
        self.docs = docs_for(broker.transport, asyncapi_version)
        protocol, host, pathname = servers.address(broker.transport)
        wanted = getattr(router, "server_name", None) or self.docs.server_name() or protocol
        self.server = Server(
            name=unique(component_name(wanted), {s.name for s in spec.servers}),
            protocol=protocol,
            host=host,
            pathname=pathname,
            description=getattr(router, "description", None) or self.docs.server_description(),
            tags=[{"name": _tag_name(t)} for t in getattr(router, "tags", None) or ()],
            bindings=self.docs.bindings("server", None),
        )
        # A router hidden from the schema shows no server unless something of it is shown.
        self.hidden = not getattr(router, "include_in_schema", True)
        spec.servers.append(self.server)

    def read(self) -> None:
        returns: dict[int, list[Any]] = {}  # publisher id -> return types of its handlers
        publishers: list[Publisher] = list(self.broker.publishers)
        for subscriber in self.broker.subscribers:
            result = _return_type(subscriber.endpoint.func)
            for publisher in subscriber.endpoint.publishers:
                if all(publisher is not p for p in publishers):
                    publishers.append(publisher)
                if result is not None:
                    returns.setdefault(id(publisher), []).append(result)
            if subscriber.include_in_schema:
                self.receive(subscriber, result)
        for publisher in publishers:
            if publisher.include_in_schema:
                self.send(publisher, returns.get(id(publisher), []))
        if self.hidden and all(o.channel.server != self.server.name for o in self.spec.operations):
            self.spec.servers.remove(self.server)

    def receive(self, subscriber: Subscriber, result: Any) -> None:
        name = getattr(subscriber.endpoint.func, "__name__", "handler")
        op_id = self.operation_id(name)
        message = self.message(f"{op_id}_message", subscriber)
        source = subscriber.plan.body_schema_source
        if isinstance(source, type) and source.__name__ == "MessageBody":
            # Several body parameters share one generated model: name it after the handler.
            source = renamed_model(source, f"{component_name(op_id)}_payload")
        if source is not None:
            self.schemas.add(source, "validation", _setter(message, "payload"))
        self.add_headers(message, subscriber.plan.header_fields)
        operation = Operation(
            id=op_id,
            action="receive",
            channel=self.channel(subscriber.channel, subscriber),
            message=message,
            title=subscriber.title,
            description=subscriber.description,
            bindings=self.docs.bindings("operation", subscriber),
        )
        if result is not None:
            # The reply goes wherever the request's reply-to says: a channel without an
            # address, holding the reply message (AsyncAPI 3.0 operation reply).
            operation.reply = reply = self.message(f"{op_id}_reply", None)
            self.schemas.add(result, "serialization", _setter(reply, "payload"))
            operation.reply_channel = Channel(
                key=unique(component_name(f"{op_id}_reply"), {c.key for c in self.spec.channels}),
                address=None,
                server=self.server.name,
            )
            operation.reply_address = self.docs.reply_address
            self.spec.channels.append(operation.reply_channel)
        self.spec.operations.append(operation)

    def send(self, publisher: Publisher, results: list[Any]) -> None:
        op_id = self.operation_id(f"send_{publisher.channel}")
        message = self.message(f"{op_id}_message", publisher)
        if len(results) == 1:
            self.schemas.add(results[0], "serialization", _setter(message, "payload"))
        elif results:
            variants: list[JSON] = [{} for _ in results]
            message.payload = {"oneOf": variants}
            for i, result in enumerate(results):
                self.schemas.add(result, "serialization", _item_setter(variants, i))
        if publisher.headers:
            message.headers = {
                "type": "object",
                "properties": {
                    k: {"type": "string", "default": v} for k, v in publisher.headers.items()
                },
            }
        self.spec.operations.append(
            Operation(
                id=op_id,
                action="send",
                channel=self.channel(ChannelPattern.parse(publisher.channel), publisher),
                message=message,
                title=publisher.title,
                description=publisher.description,
                bindings=self.docs.bindings("operation", publisher),
            )
        )

    def add_headers(self, message: Message, fields: Mapping[str, tuple[Any, bool]]) -> None:
        if not fields:
            return
        properties: JSON = {}
        message.headers = {"type": "object", "properties": properties}
        required = [name for name, (_, needed) in fields.items() if needed]
        if required:
            message.headers["required"] = required
        for name, (adapter, _) in fields.items():
            self.schemas.add(adapter, "validation", _item_setter(properties, name))

    def message(self, name: str, source: Subscriber | Publisher | None) -> Message:
        return Message(
            name=name,
            bindings=self.docs.bindings("message", source) if source is not None else {},
            correlation_id=self.docs.correlation_id,
        )

    def channel(self, pattern: ChannelPattern, source: Subscriber | Publisher) -> Channel:
        address = self.docs.address(source)
        if address is not None:
            pattern = ChannelPattern.parse(address)
        for channel in self.spec.channels:
            if channel.address == pattern.template and channel.server == self.server.name:
                return channel
        key = component_name(pattern.template.replace("{", "").replace("}", ""))
        taken = {c.key for c in self.spec.channels}
        if key in taken:
            key = unique(f"{key}_{self.server.name}", taken)
        channel = Channel(
            key=key,
            address=pattern.template,
            server=self.server.name,
            parameters={name: {} for name in pattern.params},
            bindings=self.docs.bindings("channel", source),
        )
        self.spec.channels.append(channel)
        return channel

    def operation_id(self, wanted: str) -> str:
        return unique(component_name(wanted), {o.id for o in self.spec.operations})


def _tag_name(tag: Any) -> str:
    return str(tag.value) if isinstance(tag, enum.Enum) else str(tag)


def unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _setter(message: Message, attribute: str) -> Callable[[JSON], None]:
    def apply(schema: JSON) -> None:
        setattr(message, attribute, schema)

    return apply


def _item_setter(container: Any, key: Any) -> Callable[[JSON], None]:
    def apply(schema: JSON) -> None:
        container[key] = schema

    return apply


def _return_type(func: Callable[..., Any]) -> Any:
    """What ``func`` is declared to return, ``None`` when nothing or nothing known."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references
        return None
    result = hints.get("return")
    if result is None or result is type(None):
        return None
    return result
