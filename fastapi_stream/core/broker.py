"""The broker: one transport, the subscribers and publishers bound to it, and its lifecycle.

``router.broker`` is a :class:`StreamBroker`. HTTP handlers publish through it; the
router's lifespan starts it with the app and closes it after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.datastructures import State

from fastapi_stream.core import codec, results
from fastapi_stream.core.backoff import Backoff, Reconnecting
from fastapi_stream.core.errors import ConfigurationError, PublishError, TransportError
from fastapi_stream.core.message import OutgoingMessage, StreamMessage, new_message_id
from fastapi_stream.core.middleware import Middleware, PublishNext, chain_publish
from fastapi_stream.core.options import check_publish_options
from fastapi_stream.core.policy import DEFAULT_RETRY, AckPolicy, Retry
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import Transport
from fastapi_stream.observability.logging import install_filter

__all__ = ["StreamBroker"]

DEFAULT_GRACEFUL_TIMEOUT = 15.0
#: The default ``max_body_bytes``: 1 MiB, the default message limit of Kafka and NATS.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

# URL scheme -> messaging.system of the OpenTelemetry semantic conventions.
_SYSTEMS = {"amqp": "rabbitmq", "amqps": "rabbitmq", "rediss": "redis", "mqtts": "mqtt"}


class StreamBroker:
    """A connection to a message broker with the subscribers and publishers that use it.

    Settings given here are defaults for every subscriber: ``ack_policy``, ``retry``,
    ``dead_letter``, ``middlewares`` and the ``encoder``.

    ``reconnect`` is the one backoff used whenever the broker fails: connecting, fetching,
    settling, redelivering. A broker that is down at start does not stop the app: it
    keeps connecting in the background (readiness reports it) and starts the subscribers
    once the broker answers; ``fail_fast=True`` raises instead, so the process exits.

    ``max_body_bytes`` bounds a message body both ways: publishing a larger one raises
    :class:`~fastapi_stream.PublishError` at once, and a subscriber rejects a larger one
    before decoding it (dead-lettered where configured; its size is logged, never its
    content). ``None`` sets no limit.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        ack_policy: AckPolicy = AckPolicy.ACK,
        retry: Retry = DEFAULT_RETRY,
        dead_letter: str | None = None,
        middlewares: Sequence[Middleware] = (),
        encoder: codec.Encoder = codec.encode,
        logger: logging.Logger | None = None,
        message_log_level: int | None = None,
        request_timeout: float = 10.0,
        reconnect: Backoff | None = None,
        fail_fast: bool = False,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if graceful_timeout < 0:
            raise ConfigurationError("graceful_timeout must be >= 0 seconds")
        self.transport = transport
        self.graceful_timeout = graceful_timeout
        self.ack_policy = ack_policy
        self.retry = retry
        self.dead_letter = dead_letter
        self.middlewares = list(middlewares)
        self.encoder = encoder
        self.logger = logger or logging.getLogger("fastapi_stream")
        install_filter(self.logger)  # records carry the message being handled
        #: Log a received and a processed line per message at this level (``None``: only
        #: failures are logged, at WARNING and above).
        self.message_log_level = message_log_level
        self.request_timeout = request_timeout
        self.reconnect = reconnect or Backoff()
        self.fail_fast = fail_fast
        if max_body_bytes is not None and max_body_bytes < 1:
            raise ConfigurationError("max_body_bytes must be at least 1 (None: no limit)")
        self.max_body_bytes = max_body_bytes
        self.subscribers: list[Subscriber] = []
        self.publishers: list[Publisher] = []
        #: Lifespan state shared with handlers that declare a ``State`` parameter.
        self.state = State()
        #: Where ``dependency_overrides`` come from: the FastAPI app, once started.
        self.dependency_overrides_provider: Any = None
        #: Set by the test broker: endpoints and publishers record calls in ``.mock``.
        self.testing = False
        #: Set by the inline test broker: handler errors surface at ``publish()``.
        self.raise_errors = False
        #: The event loop the broker was started in.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._started = False
        self._send: PublishNext = self._transport_publish
        self._close_task: asyncio.Future[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        #: Run once the broker is connected and its subscribers run (``after_startup``).
        self.startup_hooks: list[Callable[[], Awaitable[None]]] = []
        #: Run after the subscribers stopped, before the connection closes.
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

    def __repr__(self) -> str:
        return f"StreamBroker({self.transport.describe()})"

    @property
    def dependency_overrides(self) -> Mapping[Callable[..., Any], Callable[..., Any]]:
        provider = self.dependency_overrides_provider
        return getattr(provider, "dependency_overrides", None) or {}

    @property
    def system(self) -> str:
        """The broker's kind as OpenTelemetry names it (``kafka``, ``rabbitmq``...)."""
        scheme = self.transport.schemes[0] if self.transport.schemes else "unknown"
        return _SYSTEMS.get(scheme, scheme)

    @property
    def started(self) -> bool:
        return self._started

    # -- registration ------------------------------------------------------------------

    def add_subscriber(self, subscriber: Subscriber) -> Subscriber:
        self.subscribers.append(subscriber)
        return subscriber

    def add_publisher(self, publisher: Publisher) -> Publisher:
        check_publish_options(self.transport, publisher.channel, publisher.options)
        publisher.broker = self
        self.publishers.append(publisher)
        return publisher

    def add_middleware(self, middleware: Middleware) -> None:
        if self._started:
            raise ConfigurationError("add middlewares before the broker starts")
        self.middlewares.append(middleware)

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the transport's connection (idempotent)."""
        if not self._connected:
            for middleware in self.middlewares:
                middleware.setup(self)
            self._send = chain_publish(self.middlewares, self._transport_publish)
            await self.transport.connect()
            self._connected = True

    async def open(self) -> None:
        """Connect, or, while the broker does not answer, keep connecting in the background
        (``fail_fast``: raise instead). Publishing works once it is connected. The router's
        lifespan opens the broker before the app's own lifespan runs, so that the app can
        publish at startup."""
        if self._connected or self._connecting is not None:
            return
        self.loop = asyncio.get_running_loop()
        try:
            await self.connect()
        except TransportError as exc:
            if self.fail_fast:
                raise
            self._connect_later(exc)

    async def start(self) -> None:
        """Open the broker, start every subscriber and run the startup hooks; if the
        broker cannot be reached, do so once it answers (or raise, with ``fail_fast``)."""
        if self._started:
            return
        self._started = True
        self.loop = asyncio.get_running_loop()
        try:
            await self.open()
            if self._connecting is None:
                await self._start_subscribers()
                await self._after_startup()
        except TransportError as exc:
            if self.fail_fast:
                await self.stop()
                raise
            self._connect_later(exc)
        except BaseException:
            await self.stop()
            raise

    def _connect_later(self, error: TransportError) -> None:
        self.logger.warning(
            "broker %s is not reachable (%s); the app starts without it and keeps "
            "connecting, and its readiness reports 503 until it answers",
            self.transport.describe(),
            error,
        )
        self._connecting = asyncio.create_task(self._keep_connecting(error))

    async def _start_subscribers(self) -> None:
        await self.connect()
        for subscriber in self.subscribers:
            if subscriber.running:
                continue
            await subscriber.start(self)
            self.logger.info(
                "subscriber %s listens on %s%s",
                subscriber.name,
                subscriber.channel,
                f" (group {subscriber.group})" if subscriber.group else "",
            )

    async def _keep_connecting(self, error: TransportError) -> None:
        attempts = Reconnecting(
            f"connecting to {self.transport.describe()}", self.reconnect, self.logger
        )
        while True:
            await attempts.failed(error)
            try:
                await self.connect()
                if self._started:
                    await self._start_subscribers()
            except TransportError as exc:
                error = exc
                continue
            break
        attempts.succeeded()
        self._connecting = None
        if self._started:
            try:
                await self._after_startup()
            except Exception:
                self.logger.exception("a startup hook of %s failed", self.transport.describe())

    async def _after_startup(self) -> None:
        for hook in self.startup_hooks:
            await hook()

    async def stop(self) -> None:
        """Stop every subscriber: no new messages, in-flight ones finish within
        ``graceful_timeout``. The connection stays open for publishing."""
        self._started = False
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        await asyncio.gather(
            *(subscriber.stop(self.graceful_timeout) for subscriber in self.subscribers)
        )

    async def close(self) -> None:
        """Stop the subscribers, then close the connection. Closing twice is harmless, and
        a close while another one drains waits for it."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        task = self._close_task
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._close_task is task:
                self._close_task = None

    async def _close(self) -> None:
        await self.stop()
        if self._connected:
            for hook in self.shutdown_hooks:
                try:
                    await hook()
                except Exception:
                    self.logger.exception("a shutdown hook of %s failed", self.transport.describe())
            self._connected = False
            await self.transport.close()

    async def replace_transport(self, transport: Transport) -> Transport:
        """Close the current transport and use ``transport`` from now on (the test broker
        does this). Returns the transport that was replaced; a started broker restarts."""
        was_started = self._started
        await self.close()
        replaced, self.transport = self.transport, transport
        if was_started:
            await self.start()
        return replaced

    async def ping(self, timeout: float = 3.0) -> bool:
        """Whether the broker answers within ``timeout`` seconds."""
        if not self._connected:
            return False
        return await self.transport.ping(timeout)

    async def __aenter__(self) -> StreamBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- publishing --------------------------------------------------------------------

    def outgoing(
        self,
        message: Any,
        channel: str,
        *,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> OutgoingMessage:
        """Encode ``message`` into what the transport sends."""
        if options:
            check_publish_options(self.transport, channel, options)
        body, encoded_type = self.encoder(message)
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            raise PublishError(
                f"the message to {channel!r} is {len(body)} bytes, over the limit of "
                f"{self.max_body_bytes} (max_body_bytes): send less, or raise the limit"
            )
        return OutgoingMessage(
            channel=channel,
            body=body,
            headers=dict(headers) if headers else {},
            content_type=content_type or encoded_type,
            message_id=message_id or new_message_id(),
            correlation_id=correlation_id,
            reply_to=reply_to,
            options=options or {},
        )

    async def publish(
        self,
        message: Any,
        channel: str,
        *,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        **options: Any,
    ) -> None:
        """Encode and send ``message`` to ``channel``.

        ``options`` are the broker's own publish options (a Kafka ``key``, an AMQP
        ``priority``...). Returns once the broker confirmed the message where it confirms.
        """
        await self.send(
            self.outgoing(
                message,
                channel,
                headers=headers,
                correlation_id=correlation_id,
                reply_to=reply_to,
                message_id=message_id,
                content_type=content_type,
                options=options,
            )
        )

    async def send(self, message: OutgoingMessage) -> None:
        """Send an already encoded message through the publish middlewares."""
        await self._send(message)

    async def _transport_publish(self, message: OutgoingMessage) -> None:
        # A handler's result waits for the end of its delivery, to go out with the others.
        if results.defer(self, message):
            return
        if not self._connected and self._connecting is not None:
            raise PublishError(
                f"{self.transport.describe()} is not reachable yet (connecting in the "
                f"background); the message to {message.channel!r} was not sent"
            )
        await self.transport.publish(message)

    async def request(
        self,
        message: Any,
        channel: str,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        **options: Any,
    ) -> StreamMessage:
        """Publish ``message`` and wait for the handler's reply.

        Returns the reply as a :class:`StreamMessage` (``reply.decode()`` gives its body);
        raises :class:`~fastapi_stream.RequestTimeout` when none arrives in time.
        """
        outgoing = self.outgoing(
            message,
            channel,
            headers=headers,
            correlation_id=correlation_id or new_message_id(),
            options=options,
        )
        if self.middlewares:
            # Requests pass the publish middlewares too; the last one hands back the reply.
            reply: list[StreamMessage] = []

            async def last(prepared: OutgoingMessage) -> None:
                reply.append(await self.transport.request(prepared, wait))

            wait = timeout if timeout is not None else self.request_timeout
            await chain_publish(self.middlewares, last)(outgoing)
            return reply[0]
        return await self.transport.request(
            outgoing, timeout if timeout is not None else self.request_timeout
        )
