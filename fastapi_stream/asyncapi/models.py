"""What an AsyncAPI document says, independent of the AsyncAPI version.

:mod:`~fastapi_stream.asyncapi.collect` reads the routers of an app into a :class:`Spec`;
:mod:`~fastapi_stream.asyncapi.build` (3.0.0) and :mod:`~fastapi_stream.asyncapi.v2_6`
(2.6.0) write it out. JSON Schemas are plain dicts whose ``$ref`` point at
``#/components/schemas/<name>``, the same place in both versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "BindingsProvider",
    "Channel",
    "Element",
    "Info",
    "Message",
    "Operation",
    "Server",
    "Spec",
]

JSON = dict[str, Any]

#: The parts of a document a broker can add bindings to.
Element = Literal["server", "channel", "operation", "message"]


class BindingsProvider(Protocol):
    """What a :class:`~fastapi_stream.Transport` MAY implement to add its broker's
    bindings to the document. It is looked up with ``getattr``; a transport without it
    contributes none.

    ``source`` is the :class:`~fastapi_stream.Subscriber` or
    :class:`~fastapi_stream.Publisher` the element describes (``None`` for the server).
    The result maps a protocol to its binding object, e.g.
    ``{"kafka": {"groupId": {"type": "string", "enum": ["billing"]},
    "bindingVersion": "0.5.0"}}``; binding versions differ between AsyncAPI 2.6.0 and
    3.0.0, hence ``asyncapi_version``.
    """

    def asyncapi_bindings(
        self, element: Element, source: Any, asyncapi_version: str
    ) -> Mapping[str, Any] | None: ...


@dataclass(slots=True)
class Info:
    title: str
    version: str
    description: str | None = None
    terms_of_service: str | None = None
    contact: JSON | None = None
    license: JSON | None = None
    tags: list[JSON] = field(default_factory=list)
    #: The application's URI (``id`` of an AsyncAPI 2.6.0 document; 3.0.0 has none).
    document_id: str | None = None


@dataclass(slots=True)
class Server:
    """One broker. ``host`` never holds credentials."""

    name: str
    protocol: str
    host: str
    pathname: str | None = None
    description: str | None = None
    tags: list[JSON] = field(default_factory=list)
    bindings: JSON = field(default_factory=dict)


@dataclass(slots=True)
class Message:
    name: str
    title: str | None = None
    description: str | None = None
    payload: JSON = field(default_factory=dict)
    headers: JSON | None = None
    examples: list[JSON] = field(default_factory=list)
    bindings: JSON = field(default_factory=dict)
    #: Where the correlation id travels; ``None`` where no runtime expression can say it.
    correlation_id: JSON | None = None


@dataclass(slots=True)
class Channel:
    """One address on one server; ``key`` is its id in the document. A reply channel has
    no address (``None``): the reply goes where the request's reply-to says."""

    key: str
    address: str | None
    server: str
    parameters: dict[str, JSON] = field(default_factory=dict)
    bindings: JSON = field(default_factory=dict)


@dataclass(slots=True)
class Operation:
    """``receive`` for a subscriber, ``send`` for a publisher. ``reply`` is what a
    subscriber's handler returns to a request's reply-to address."""

    id: str
    action: Literal["receive", "send"]
    channel: Channel
    message: Message
    title: str | None = None
    description: str | None = None
    reply: Message | None = None
    #: The channel of the reply (address ``None``) and where a request names its address.
    reply_channel: Channel | None = None
    reply_address: JSON | None = None
    bindings: JSON = field(default_factory=dict)


@dataclass(slots=True)
class Spec:
    info: Info
    servers: list[Server] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    #: Named JSON Schemas (nested models, enums) that payloads and headers refer to.
    schemas: dict[str, JSON] = field(default_factory=dict)
