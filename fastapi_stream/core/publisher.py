"""Publishers: a channel to send to, usable directly or stacked on a handler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from fastapi_stream.core.endpoint import CallRecorder, Endpoint
from fastapi_stream.core.errors import ConfigurationError

if TYPE_CHECKING:
    from unittest.mock import MagicMock

    from fastapi_stream.core.broker import StreamBroker

__all__ = ["Publisher", "Response"]

P = ParamSpec("P")
R = TypeVar("R")


class Response:
    """A handler result that carries its own headers, correlation id or broker options::

    return Response(order, headers={"version": "2"})
    """

    __slots__ = ("body", "correlation_id", "headers", "options")

    def __init__(
        self,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        **options: Any,
    ) -> None:
        self.body = body
        self.headers = dict(headers or {})
        self.correlation_id = correlation_id
        self.options = options


class Publisher:
    """Sends to one channel; ``await pub.publish(msg)``, or ``@pub`` on a handler to publish
    its return value there.

    ``headers`` and broker ``options`` given here are defaults for every publish.
    """

    def __init__(
        self,
        channel: str,
        *,
        headers: Mapping[str, str] | None = None,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if not channel or not isinstance(channel, str):
            raise ConfigurationError(
                f"a publisher needs a channel name (str), not {type(channel).__name__} {channel!r}"
            )
        self.channel = channel
        self.headers = dict(headers or {})
        self.options = dict(options or {})
        self.title = title
        self.description = description
        self.include_in_schema = include_in_schema
        self.broker: StreamBroker | None = None
        self._recorder = CallRecorder(f"publisher:{channel}")

    def __repr__(self) -> str:
        return f"Publisher({self.channel!r})"

    @property
    def mock(self) -> MagicMock:
        """Called with the decoded body of each publish made under a test broker."""
        return self._recorder.mock

    def reset(self) -> None:
        """Forget recorded publishes (done when a test broker exits)."""
        self._recorder.reset()

    def __call__(self, func: Callable[P, R]) -> Endpoint[P, R]:
        endpoint = func if isinstance(func, Endpoint) else Endpoint(func)
        endpoint.publishers.append(self)
        return endpoint

    async def publish(
        self,
        message: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        **options: Any,
    ) -> None:
        """Encode ``message`` and send it to this publisher's channel."""
        if self.broker is None:
            raise ConfigurationError(
                f"publisher {self.channel!r} is not attached to a broker: create it with "
                "router.publisher(...) on a StreamRouter that has a broker"
            )
        outgoing = self.broker.outgoing(
            message,
            self.channel,
            headers={**self.headers, **headers} if headers else self.headers,
            correlation_id=correlation_id,
            reply_to=reply_to,
            options={**self.options, **options} if options else self.options,
        )
        if self.broker.testing:
            self._recorder.record((outgoing.body, outgoing.content_type))
        await self.broker.send(outgoing)
