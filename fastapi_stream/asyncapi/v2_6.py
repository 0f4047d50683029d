"""The AsyncAPI 2.6.0 writer.

2.6.0 names operations from the point of view of the other side: a channel's ``publish``
operation is what others publish and this app receives (a subscriber), ``subscribe`` is
what this app sends (a publisher). A channel is keyed by its address (a URI template) and
has at most one operation of each kind, so several subscribers of one address share one
``publish`` operation whose message is ``oneOf`` theirs.

2.6.0 has no replies. Their equivalent here: the app sends each reply on the channel
``{reply_to}``, an address that is all parameter, the reply-to address of the request.
"""

from __future__ import annotations

import re

from fastapi_stream.asyncapi.build import info_object, message_object, present, server_fields
from fastapi_stream.asyncapi.models import JSON, Channel, Operation, Spec

__all__ = ["REPLY_CHANNEL", "write_v2_6"]

#: The 2.6.0 operation that describes each of our actions.
_KIND = {"receive": "publish", "send": "subscribe"}
REPLY_CHANNEL = "{reply_to}"
# What RFC 6570 does not allow in the literal parts of a URI template.
_NOT_LITERAL = re.compile(r"[\x00-\x20\"'%<>\\^`|?]")
#: AMQP's "#" wildcard (any words) in a 2.6.0 channel, where "#" cannot be, even encoded:
#: the official parser decodes keys and then refuses a fragment delimiter.
WILDCARD = "wildcard"
_WILDCARD_PARAMETER: JSON = {
    "description": "Stands for the broker's # wildcard: any number of words.",
    "schema": {"type": "string"},
}
_EXPRESSION = re.compile(r"({\w+})")


def write_v2_6(spec: Spec) -> JSON:
    channels, referenced = _channels(spec)
    document: JSON = {"asyncapi": "2.6.0"}
    if spec.info.document_id:
        document["id"] = spec.info.document_id
    document.update(
        {
            "info": info_object(spec.info, with_tags=False),
            "defaultContentType": "application/json",
            "servers": {
                s.name: {"url": s.host + (s.pathname or ""), **server_fields(s)}
                for s in spec.servers
            },
            "channels": channels,
        }
    )
    if spec.info.tags:
        document["tags"] = spec.info.tags
    components: JSON = {}
    if spec.schemas:
        components["schemas"] = spec.schemas
    messages = {
        m.name: message_object(m, message_id=True)
        for o in spec.operations
        for m in (o.message, o.reply)
        if m is not None and m.name in referenced
    }
    if messages:
        components["messages"] = messages
    if components:
        document["components"] = components
    return document


def _channels(spec: Spec) -> tuple[dict[str, JSON], set[str]]:
    """The channels, and the names of the messages they refer to in the components."""
    channels: dict[str, JSON] = {}
    grouped: dict[tuple[str, str], list[Operation]] = {}
    for operation in [*spec.operations, *_replies(spec)]:
        channel = operation.channel
        key = uri_template(channel.address or REPLY_CHANNEL)
        entry = channels.setdefault(key, {"servers": []})
        if channel.server not in entry["servers"]:
            entry["servers"].append(channel.server)
        parameters = {
            name: {"schema": {"type": "string"}, **parameter}
            for name, parameter in channel.parameters.items()
        }
        if f"{{{WILDCARD}}}" in key:
            parameters[WILDCARD] = _WILDCARD_PARAMETER
        if parameters:
            entry["parameters"] = parameters
        if channel.bindings:
            entry.setdefault("bindings", channel.bindings)
        grouped.setdefault((key, _KIND[operation.action]), []).append(operation)
    referenced: set[str] = set()
    for (key, kind), operations in grouped.items():
        # The official parser percent-decodes a channel key while it resolves the $refs
        # inside that channel, then finds the decoded key no URI template: such a
        # channel's messages are written out in place.
        inline = "%" in key
        channels[key][kind] = _operation(operations, inline=inline)
        if not inline:
            referenced.update(o.message.name for o in operations)
    return channels, referenced


def uri_template(address: str) -> str:
    """``address`` as a 2.6.0 channel key: its ``{param}`` kept, every character a URI
    template cannot hold percent-encoded (a NATS ``>`` wildcard becomes ``%3E``), AMQP's
    ``#`` wildcard the parameter ``{wildcard}``."""
    parts = _EXPRESSION.split(address.replace("#", f"{{{WILDCARD}}}"))
    return "".join(
        part if i % 2 else _NOT_LITERAL.sub(lambda m: f"%{ord(m.group()):02X}", part)
        for i, part in enumerate(parts)
    )


def _replies(spec: Spec) -> list[Operation]:
    """Each reply as an operation of its own: the app sends it on ``{reply_to}``."""
    found = []
    for operation in spec.operations:
        if operation.reply is None:
            continue
        where = operation.reply_address
        parameter: JSON = {"description": "The reply-to address of the request."}
        if where is not None:
            parameter["description"] += f" (`{where['location']}` of the request)"
        found.append(
            Operation(
                id=f"{operation.id}_reply",
                action="send",
                channel=Channel(
                    key=REPLY_CHANNEL,
                    address=REPLY_CHANNEL,
                    server=operation.channel.server,
                    parameters={"reply_to": parameter},
                ),
                message=operation.reply,
                description=f"The reply to {operation.id}.",
            )
        )
    return found


def _operation(operations: list[Operation], *, inline: bool) -> JSON:
    refs = [
        message_object(o.message, message_id=True)
        if inline
        else {"$ref": f"#/components/messages/{o.message.name}"}
        for o in operations
    ]
    first = operations[0]
    found: JSON = {"operationId": first.id}
    if len(operations) == 1:
        found |= present(
            summary=first.title, description=first.description, bindings=first.bindings
        )
    found["message"] = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return found
