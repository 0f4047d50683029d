"""The AsyncAPI 3.0.0 writer, and the objects both versions share.

In 3.0.0 a channel is an address on a server with the messages that travel on it, and an
operation says what the app does there: ``receive`` (a subscriber) or ``send`` (a
publisher). A subscriber whose handler returns a value also gets a ``reply``: the answer to
a request's reply-to address.
"""

from __future__ import annotations

from typing import Any

from fastapi_stream.asyncapi.models import JSON, Channel, Info, Message, Operation, Server, Spec

__all__ = [
    "channel_messages",
    "info_object",
    "message_object",
    "present",
    "server_fields",
    "write_v3",
]


def write_v3(spec: Spec) -> JSON:
    messages: JSON = {}
    for operation in spec.operations:
        messages[operation.message.name] = message_object(operation.message)
        if operation.reply is not None:
            messages[operation.reply.name] = message_object(operation.reply)
    components: JSON = {}
    if spec.schemas:
        components["schemas"] = spec.schemas
    if messages:
        components["messages"] = messages
    document: JSON = {
        "asyncapi": "3.0.0",
        "info": info_object(spec.info, with_tags=True),
        "defaultContentType": "application/json",
        "servers": {s.name: _server(s) for s in spec.servers},
        "channels": {c.key: _channel(c, spec.operations) for c in spec.channels},
        "operations": {o.id: _operation(o, spec.operations) for o in spec.operations},
    }
    if components:
        document["components"] = components
    return document


def info_object(info: Info, *, with_tags: bool) -> JSON:
    """The info object; 3.0.0 keeps the tags in it, 2.6.0 at the top of the document."""
    found: JSON = {"title": info.title, "version": info.version}
    optional = {
        "description": info.description,
        "termsOfService": info.terms_of_service,
        "contact": info.contact,
        "license": info.license,
    }
    found.update({k: v for k, v in optional.items() if v})
    if with_tags and info.tags:
        found["tags"] = info.tags
    return found


def channel_messages(channel: Channel, operations: list[Operation]) -> list[Message]:
    """The messages that travel on ``channel``: those of its operations and the replies
    sent on it."""
    found = [o.message for o in operations if o.channel is channel]
    found += [o.reply for o in operations if o.reply and o.reply_channel is channel]
    return found


def present(**fields: Any) -> JSON:
    """The ``fields`` that say something: neither ``None`` nor empty."""
    return {k: v for k, v in fields.items() if v is not None and v != "" and v != [] and v != {}}


def message_object(message: Message, *, message_id: bool = False) -> JSON:
    """A message; ``message_id`` adds 2.6.0's ``messageId`` (3.0.0 keys messages instead)."""
    found = present(
        messageId=message.name if message_id else None,
        name=message.name,
        title=message.title,
        description=message.description,
        contentType="application/json",
    )
    found["payload"] = message.payload  # {} too: any value
    return found | present(
        headers=message.headers,
        correlationId=message.correlation_id,
        examples=message.examples,
        bindings=message.bindings,
    )


def server_fields(server: Server) -> JSON:
    """What a server says besides where it is, the same in both versions."""
    return present(
        protocol=server.protocol,
        description=server.description,
        tags=server.tags,
        bindings=server.bindings,
    )


def _server(server: Server) -> JSON:
    found: JSON = {"host": server.host, **server_fields(server)}
    if server.pathname:
        found["pathname"] = server.pathname
    return found


def _channel(channel: Channel, operations: list[Operation]) -> JSON:
    found: JSON = {
        "address": channel.address,
        "servers": [{"$ref": f"#/servers/{channel.server}"}],
        "messages": {
            m.name: {"$ref": f"#/components/messages/{m.name}"}
            for m in channel_messages(channel, operations)
        },
    }
    if channel.parameters:
        found["parameters"] = channel.parameters
    if channel.bindings:
        found["bindings"] = channel.bindings
    return found


def _operation(operation: Operation, operations: list[Operation]) -> JSON:
    key = operation.channel.key
    found: JSON = {"action": operation.action, "channel": {"$ref": f"#/channels/{key}"}}
    # Without "messages" an operation handles every message of its channel: said only
    # when the channel carries others too (code generators warn about the redundancy).
    if len(channel_messages(operation.channel, operations)) > 1:
        found["messages"] = [{"$ref": f"#/channels/{key}/messages/{operation.message.name}"}]
    if operation.title:
        found["title"] = operation.title
    if operation.description:
        found["description"] = operation.description
    if operation.reply is not None and operation.reply_channel is not None:
        reply_key = operation.reply_channel.key
        reply: JSON = {
            "channel": {"$ref": f"#/channels/{reply_key}"},
            "messages": [{"$ref": f"#/channels/{reply_key}/messages/{operation.reply.name}"}],
        }
        if operation.reply_address is not None:
            reply["address"] = operation.reply_address
        found["reply"] = reply
    if operation.bindings:
        found["bindings"] = operation.bindings
    return found
