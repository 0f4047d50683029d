"""The one error tree of fastapi_stream, rooted at :class:`StreamError`.

Catch broadly (``StreamError``) or narrowly (``RequestTimeout``); configuration errors
say what to change, payload errors say which field of which message was wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
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
    "client_error",
    "client_errors",
    "reason",
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


def reason(exc: BaseException) -> str:
    """``"KafkaTimeoutError: message"`` (the type alone where there is no message)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def client_error(
    exc: BaseException,
    what: str,
    *,
    broker: str,
    timeout: float | None = None,
    error: type[TransportError] = PublishError,
) -> StreamError:
    """Our error for ``exc``, which a broker client raised while doing ``what`` (``"the
    publish to 'orders'"``): ours as it is (a ``TransportError`` becomes ``error``); a
    timeout as ``error("{broker} did not confirm {what} within {timeout}s")``; else
    ``error("{broker}: {what} failed: {reason}")``. Raise it ``from None``: a client's
    exception may carry a URL with its password."""
    if isinstance(exc, error) or (
        isinstance(exc, StreamError) and not isinstance(exc, TransportError)
    ):
        return exc
    if isinstance(exc, TimeoutError) and timeout is not None:
        return error(f"{broker} did not confirm {what} within {timeout}s")
    return error(f"{broker}: {what} failed: {reason(exc)}")


@contextlib.asynccontextmanager
async def client_errors(
    what: str,
    errors: tuple[type[BaseException], ...],
    *,
    broker: str,
    timeout: float | None = None,
    error: type[TransportError] = PublishError,
) -> AsyncIterator[None]:
    """Run the block within ``timeout`` seconds (``None``: no bound); a timeout or one of
    the client's ``errors`` leaves it as :func:`client_error` says (a
    :class:`PublishError` by default, ``error=TransportError`` for other operations)."""
    caught: tuple[type[BaseException], ...] = (TimeoutError, *errors)
    try:
        async with asyncio.timeout(timeout):
            yield
    except caught as exc:
        raise client_error(exc, what, broker=broker, timeout=timeout, error=error) from None
