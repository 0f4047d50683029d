"""fastapi_stream: message brokers for FastAPI.

``StreamRouter`` is an ``APIRouter`` that owns a broker connection; its ``subscriber`` and
``publisher`` decorators sit next to ``get`` and ``post``, and message handlers use
FastAPI's own dependency injection.
"""

import logging
from typing import TYPE_CHECKING, Any, TypeAlias

from starlette.datastructures import State

from fastapi_stream.core.backoff import Backoff
from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.codec import Decoder, Encoder
from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.errors import (
    BrokerNotConnected,
    ConfigurationError,
    HandlerError,
    PayloadError,
    PublishError,
    RequestTimeout,
    StreamError,
    TransportError,
)
from fastapi_stream.core.message import OutgoingMessage, Settlement, StreamMessage
from fastapi_stream.core.middleware import Middleware
from fastapi_stream.core.policy import AckPolicy, Retry
from fastapi_stream.core.publisher import Publisher, Response
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import Routing, Subscription, SubscriptionSpec, Transport
from fastapi_stream.router import StreamRouter

#: Annotate a handler parameter with ``Logger`` to receive the broker's logger.
Logger: TypeAlias = logging.Logger


if TYPE_CHECKING:
    __version__: str
else:

    def __getattr__(name: str) -> Any:
        """``__version__``, read from the installed metadata when asked for (importing
        ``importlib.metadata`` costs more than a tenth of the package's own import time)."""
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version

            try:
                return version("fastapi-stream")
            except PackageNotFoundError:  # pragma: no cover - running from a source tree
                return "0.0.0"
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AckPolicy",
    "Backoff",
    "BrokerNotConnected",
    "ConfigurationError",
    "Decoder",
    "Encoder",
    "Endpoint",
    "HandlerError",
    "Logger",
    "Middleware",
    "OutgoingMessage",
    "PayloadError",
    "PublishError",
    "Publisher",
    "RequestTimeout",
    "Response",
    "Retry",
    "Routing",
    "Settlement",
    "State",
    "StreamBroker",
    "StreamError",
    "StreamMessage",
    "StreamRouter",
    "Subscriber",
    "Subscription",
    "SubscriptionSpec",
    "Transport",
    "TransportError",
]
