"""What a broker adds to the document: its bindings, where its correlation id and reply
address travel, a name and description for its server.

Each broker subpackage holds its part in ``fastapi_stream/<broker>/asyncapi.py``, a
function ``broker_docs(transport, asyncapi_version)`` returning a :class:`BrokerDocs`. It
is found from the package of the transport's class (or of a base), imported only when a
document is written, so this package imports no broker. A transport from elsewhere may
instead implement :class:`~fastapi_stream.asyncapi.models.BindingsProvider`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast

from fastapi_stream.asyncapi.models import JSON, Element
from fastapi_stream.core.transport import Transport

__all__ = ["CORRELATION_ID", "REPLY_ADDRESS", "BrokerDocs", "docs_for"]

#: Where brokers without message properties of their own carry the correlation id and the
#: reply-to address: headers of the message (the core's envelope names).
CORRELATION_ID: JSON = {
    "description": "The correlation id a request and its reply share.",
    "location": "$message.header#/correlation_id",
}
REPLY_ADDRESS: JSON = {
    "description": "The reply-to address of the request.",
    "location": "$message.header#/reply_to",
}


class BrokerDocs:
    """A broker's part of the document; this base adds no bindings.

    ``source`` in :meth:`bindings` is the :class:`~fastapi_stream.Subscriber` or
    :class:`~fastapi_stream.Publisher` an element describes (``None`` for the server).
    """

    #: ``None`` where the id is a property of the broker's message, not a header: AsyncAPI's
    #: runtime expressions reach only headers and payload.
    correlation_id: JSON | None = CORRELATION_ID
    reply_address: JSON | None = REPLY_ADDRESS

    def __init__(self, transport: Transport, asyncapi_version: str) -> None:
        self.transport = transport
        self.asyncapi_version = asyncapi_version

    @property
    def v3(self) -> bool:
        return self.asyncapi_version.startswith("3.")

    def server_name(self) -> str | None:
        """A name that tells this broker's server from another on the same broker."""
        return None

    def server_description(self) -> str | None:
        return None

    def address(self, source: Any) -> str | None:
        """The address others use for ``source``'s channel, when it is not the channel
        itself (a RabbitMQ queue bound with another routing key)."""
        return None

    def bindings(self, element: Element, source: Any) -> JSON:
        return {}


class _ProviderDocs(BrokerDocs):
    """A transport's own :class:`~fastapi_stream.asyncapi.models.BindingsProvider`."""

    def bindings(self, element: Element, source: Any) -> JSON:
        provide = getattr(self.transport, "asyncapi_bindings", None)
        if provide is None:
            return {}
        found = provide(element, source, self.asyncapi_version)
        return dict(cast(Mapping[str, Any], found)) if found else {}


def docs_for(transport: Transport, asyncapi_version: str) -> BrokerDocs:
    """The :class:`BrokerDocs` of the broker subpackage of ``transport``'s class, or of
    its nearest base that has one (a ``KafkaTransport`` subclass from elsewhere gets
    Kafka's), else of the transport itself."""
    for cls in type(transport).__mro__[:-1]:
        package = cls.__module__.rpartition(".")[0]
        name = f"{package}.asyncapi"
        try:
            module = importlib.import_module(name) if package else None
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            module = None
        make = getattr(module, "broker_docs", None)
        if make is not None:
            return cast(BrokerDocs, make(transport, asyncapi_version))
        if "asyncapi_bindings" in vars(cls) or cls is Transport:
            break
    return _ProviderDocs(transport, asyncapi_version)
