"""The one error tree of fastapi_stream, rooted at :class:`StreamError`.

Catch broadly (``StreamError``) or narrowly (``RequestTimeout``); configuration errors
say what to change, payload errors say which field of which message was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BrokerNotConnected",
    "ConfigurationError",
    "HandlerError",
    "PayloadError",
    "PublishError",
    "RequestTimeout",
    "StreamError",
    "TransportError",
]


class StreamError(Exception):
    """Base class of every error raised by fastapi_stream."""


class ConfigurationError(StreamError):
    """The application is set up in a way that cannot work; the message says what to fix."""


class TransportError(StreamError):
    """The broker or its client failed (connection lost, broker refused an operation)."""


class BrokerNotConnected(TransportError):
    """An operation needs a connected broker and the broker is not connected."""


class PublishError(TransportError):
    """A publish was not confirmed by the broker."""


class RequestTimeout(StreamError, TimeoutError):
    """No reply arrived within the request's timeout."""


class HandlerError(StreamError):
    """A message handler raised; the original exception is ``__cause__``."""


class PayloadError(StreamError):
    """A message could not be decoded or failed validation.

    ``errors`` lists pydantic-style error dicts whose ``loc`` starts with where the value
    lives in the message: ``("body", ...)``, ``("headers", name)`` or ``("path", name)``.
    Input values are never included, so the error is safe to log.
    """

    def __init__(self, reason: str, errors: Sequence[dict[str, Any]] = ()) -> None:
        self.reason = reason
        self.errors = [{"loc": tuple(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
        super().__init__(self._describe())

    def _describe(self) -> str:
        if not self.errors:
            return self.reason
        fields = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in self.errors
        )
        return f"{self.reason}: {fields}"
