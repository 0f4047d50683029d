"""The AsyncAPI 2.6.0 writer.

2.6.0 names operations from the point of view of the other side: a channel's ``publish``
operation is what others publish and this app receives (a subscriber), ``subscribe`` is
what this app sends (a publisher). A channel is keyed by its address and has at most one
operation of each kind, so several subscribers of one address share one ``publish``
operation whose message is ``oneOf`` theirs. Replies have no place in 2.6.0.
"""

from __future__ import annotations

from fastapi_stream.asyncapi.build import info_object, message_object
from fastapi_stream.asyncapi.models import JSON, Operation, Spec

__all__ = ["write_v2_6"]

#: The 2.6.0 operation that describes each of our actions.
_KIND = {"receive": "publish", "send": "subscribe"}


def write_v2_6(spec: Spec) -> JSON:
    channels: dict[str, JSON] = {}
    grouped: dict[tuple[str, str], list[Operation]] = {}
    for operation in spec.operations:
        channel = operation.channel
        entry = channels.setdefault(channel.address, {"servers": []})
        if channel.server not in entry["servers"]:
            entry["servers"].append(channel.server)
        if channel.parameters:
            entry["parameters"] = {
                name: {"schema": {"type": "string"}} for name in channel.parameters
            }
        if channel.bindings:
            entry.setdefault("bindings", channel.bindings)
        grouped.setdefault((channel.address, _KIND[operation.action]), []).append(operation)
    for (address, kind), operations in grouped.items():
        channels[address][kind] = _operation(operations)
    document: JSON = {
        "asyncapi": "2.6.0",
        "info": info_object(spec.info, with_tags=False),
        "defaultContentType": "application/json",
        "servers": {
            s.name: {
                "url": s.host + (s.pathname or ""),
                "protocol": s.protocol,
                **({"bindings": s.bindings} if s.bindings else {}),
            }
            for s in spec.servers
        },
        "channels": channels,
    }
    if spec.info.tags:
        document["tags"] = spec.info.tags
    components: JSON = {}
    if spec.schemas:
        components["schemas"] = spec.schemas
    messages = {o.message.name: message_object(o.message) for o in spec.operations}
    if messages:
        components["messages"] = messages
    if components:
        document["components"] = components
    return document


def _operation(operations: list[Operation]) -> JSON:
    refs = [{"$ref": f"#/components/messages/{o.message.name}"} for o in operations]
    first = operations[0]
    found: JSON = {"operationId": first.id}
    if len(operations) == 1:
        if first.title:
            found["summary"] = first.title
        if first.description:
            found["description"] = first.description
        if first.bindings:
            found["bindings"] = first.bindings
    found["message"] = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return found
