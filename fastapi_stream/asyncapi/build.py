"""The AsyncAPI 3.0.0 writer, and the objects both versions share.

In 3.0.0 a channel is an address on a server with the messages that travel on it, and an
operation says what the app does there: ``receive`` (a subscriber) or ``send`` (a
publisher). A subscriber whose handler returns a value also gets a ``reply``: the answer to
a request's reply-to address.
"""

from __future__ import annotations

from fastapi_stream.asyncapi.models import JSON, Channel, Info, Message, Operation, Spec

__all__ = ["CORRELATION_ID", "info_object", "message_object", "write_v3"]

CORRELATION_ID: JSON = {
    "description": "The correlation id a request and its reply share.",
    "location": "$message.header#/correlation_id",
}
REPLY_ADDRESS: JSON = {
    "description": "The reply-to address of the request.",
    "location": "$message.header#/reply_to",
}


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
        "servers": {
            s.name: _server(s.protocol, s.host, s.pathname, s.bindings) for s in spec.servers
        },
        "channels": {c.key: _channel(c, spec.operations) for c in spec.channels},
        "operations": {o.id: _operation(o) for o in spec.operations},
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


def message_object(message: Message) -> JSON:
    found: JSON = {"name": message.name}
    if message.title:
        found["title"] = message.title
    if message.description:
        found["description"] = message.description
    found["contentType"] = "application/json"
    found["payload"] = message.payload
    if message.headers is not None:
        found["headers"] = message.headers
    found["correlationId"] = CORRELATION_ID
    if message.examples:
        found["examples"] = message.examples
    if message.bindings:
        found["bindings"] = message.bindings
    return found


def _server(protocol: str, host: str, pathname: str | None, bindings: JSON) -> JSON:
    found: JSON = {"host": host, "protocol": protocol}
    if pathname:
        found["pathname"] = pathname
    if bindings:
        found["bindings"] = bindings
    return found


def _channel(channel: Channel, operations: list[Operation]) -> JSON:
    found: JSON = {
        "address": channel.address,
        "servers": [{"$ref": f"#/servers/{channel.server}"}],
        "messages": {
            o.message.name: {"$ref": f"#/components/messages/{o.message.name}"}
            for o in operations
            if o.channel is channel
        },
    }
    if channel.parameters:
        found["parameters"] = channel.parameters
    if channel.bindings:
        found["bindings"] = channel.bindings
    return found


def _operation(operation: Operation) -> JSON:
    key = operation.channel.key
    found: JSON = {
        "action": operation.action,
        "channel": {"$ref": f"#/channels/{key}"},
        "messages": [{"$ref": f"#/channels/{key}/messages/{operation.message.name}"}],
    }
    if operation.title:
        found["title"] = operation.title
    if operation.description:
        found["description"] = operation.description
    if operation.reply is not None:
        found["reply"] = {
            "address": REPLY_ADDRESS,
            "messages": [{"$ref": f"#/components/messages/{operation.reply.name}"}],
        }
    if operation.bindings:
        found["bindings"] = operation.bindings
    return found
