"""``StreamRouter``: a FastAPI ``APIRouter`` that also owns a message broker.

``app.include_router(router)`` is all an application writes: FastAPI merges the router's
lifespan into the app's, so the broker starts with the app and closes after it.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypedDict, TypeVar

from fastapi import APIRouter, params
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from fastapi_stream.asyncapi.routes import add_asyncapi_routes
from fastapi_stream.core import codec
from fastapi_stream.core.backoff import Backoff
from fastapi_stream.core.broker import (
    DEFAULT_GRACEFUL_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    StreamBroker,
)
from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.middleware import Middleware
from fastapi_stream.core.policy import DEFAULT_RETRY, NO_RETRY, AckPolicy, Retry
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import Transport
from fastapi_stream.core.url import transport_for
from fastapi_stream.health import add_health_routes, register_broker

__all__ = ["RouterOptions", "StreamRouter"]

P = ParamSpec("P")
R = TypeVar("R")

Lifespan = Callable[[Any], Any]
#: A startup or shutdown hook: called with the FastAPI app, sync or async; a startup hook
#: may return a mapping of state.
Hook = TypeVar("Hook", bound=Callable[[Any], Any])


class RouterOptions(TypedDict, total=False):
    """:class:`StreamRouter`'s keyword arguments and ``APIRouter``'s, as a broker's router
    (``KafkaRouter``...) takes them beside its connection options. Documented on
    ``StreamRouter`` and ``APIRouter``; ``tests/test_router.py`` keeps the lists equal."""

    graceful_timeout: float
    ack_policy: AckPolicy
    retry: Retry | bool
    dead_letter: str | None
    middlewares: Sequence[Middleware]
    encoder: codec.Encoder
    logger: logging.Logger | None
    message_log_level: int | None
    health_url: str | None
    schema_url: str | None
    server_name: str | None
    description: str | None
    lifespan: Lifespan | None
    reconnect: Backoff | None
    fail_fast: bool
    max_body_bytes: int | None
    # APIRouter's
    prefix: str
    tags: list[str | enum.Enum] | None
    dependencies: Sequence[params.Depends] | None
    default_response_class: type[Response]
    responses: dict[int | str, dict[str, Any]] | None
    callbacks: list[BaseRoute] | None
    routes: list[BaseRoute] | None
    redirect_slashes: bool
    default: ASGIApp | None
    dependency_overrides_provider: Any
    route_class: type[APIRoute]
    on_startup: Sequence[Callable[[], Any]] | None
    on_shutdown: Sequence[Callable[[], Any]] | None
    deprecated: bool | None
    include_in_schema: bool
    generate_unique_id_function: Callable[[APIRoute], str]
    strict_content_type: bool
    max_body_size: int | None
    form_limits: Any


class StreamRouter(APIRouter):
    """An ``APIRouter`` with a broker: ``@router.subscriber``, ``@router.publisher`` and
    ``router.broker`` beside the usual ``@router.get`` and ``@router.post``.

    ``url_or_broker`` is a broker URL (``"kafka://localhost:9092"``, ``"memory://"``...),
    a :class:`StreamBroker`, a :class:`Transport`, or ``None`` for a router whose handlers
    join the broker of the StreamRouter that includes it. Every ``APIRouter`` argument
    (``prefix``, ``tags``, ``dependencies``...) works as usual; ``dependencies`` apply to
    message handlers too. A ``lifespan`` given here runs inside the broker's lifetime and
    the state it yields reaches both HTTP routes (``request.state``) and message handlers
    (a ``State`` parameter).

    ``health_url`` places the ``/live`` and ``/ready`` routes (``None`` turns them off;
    a router without a broker of its own adds none). ``message_log_level`` logs a
    received and a processed line per message at that level; by default only failures
    are logged. ``schema_url`` places the AsyncAPI page and its ``.json`` and ``.yaml``
    documents (``None`` turns them off and leaves this router's broker out of the app's
    document). In that document the broker is a server named ``server_name`` (by default
    after its protocol), described by ``description`` and tagged with the router's
    ``tags``; ``include_in_schema=False`` leaves the router's message handlers and
    publishers out of it, as it leaves its HTTP routes out of OpenAPI.

    ``reconnect`` is the :class:`~fastapi_stream.Backoff` applied whenever the broker
    fails (connecting, fetching, settling). An app whose broker is down at startup still
    starts: readiness answers 503 until the broker answers, then the subscribers start;
    ``fail_fast=True`` makes startup raise instead, so the process exits.
    ``max_body_bytes`` (1 MiB by default, ``None`` for none) bounds message bodies: a
    larger publish raises at once, a larger delivery is rejected before decoding.
    """

    def __init__(
        self,
        url_or_broker: str | StreamBroker | Transport | None = None,
        *,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
        ack_policy: AckPolicy = AckPolicy.ACK,
        retry: Retry | bool = True,
        dead_letter: str | None = None,
        middlewares: Sequence[Middleware] = (),
        encoder: codec.Encoder = codec.encode,
        logger: logging.Logger | None = None,
        message_log_level: int | None = None,
        health_url: str | None = "/health",
        schema_url: str | None = "/asyncapi",
        server_name: str | None = None,
        description: str | None = None,
        lifespan: Lifespan | None = None,
        reconnect: Backoff | None = None,
        fail_fast: bool = False,
        max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
        **router_options: Any,
    ) -> None:
        #: Whether an app (or a router) included this one.
        self.included = False
        super().__init__(lifespan=self._lifespan, **router_options)
        self.server_name = server_name
        self.description = description
        self._user_lifespan = lifespan
        self._app: Any = None  # the app whose lifespan runs this router, once it runs
        self._owns_broker = url_or_broker is not None
        self._broker: StreamBroker | None
        if isinstance(url_or_broker, StreamBroker):
            self._broker = url_or_broker
        elif url_or_broker is None:
            self._broker = None
        else:
            transport = (
                transport_for(url_or_broker) if isinstance(url_or_broker, str) else url_or_broker
            )
            self._broker = StreamBroker(
                transport,
                graceful_timeout=graceful_timeout,
                ack_policy=ack_policy,
                retry=_as_retry(retry) or DEFAULT_RETRY,
                dead_letter=dead_letter,
                middlewares=middlewares,
                encoder=encoder,
                logger=logger,
                message_log_level=message_log_level,
                reconnect=reconnect,
                fail_fast=fail_fast,
                max_body_bytes=max_body_bytes,
            )
        self._subscribers: list[Subscriber] = []
        # Registered before this router has a broker (a broker-less router).
        self._pending_subscribers: list[Subscriber] = []
        self._pending_publishers: list[Publisher] = []
        self._publishers: list[Publisher] = []
        self._children: list[StreamRouter] = []
        self.health_url = health_url if self._owns_broker else None
        if self.health_url is not None:
            add_health_routes(self, self.health_url)
        self.schema_url = schema_url if self._owns_broker else None
        if self.schema_url is not None:
            add_asyncapi_routes(self, self.schema_url)

    @property
    def broker(self) -> StreamBroker:
        """The broker this router's handlers use."""
        if self._broker is None:
            raise ConfigurationError(
                "this StreamRouter has no broker: give it a URL, StreamRouter('kafka://...'), "
                "or include it in a StreamRouter that has one"
            )
        return self._broker

    @property
    def has_broker(self) -> bool:
        return self._broker is not None

    # -- registration ------------------------------------------------------------------

    def subscriber(
        self,
        channel: str | None = None,
        *,
        group: str | None = None,
        ack_policy: AckPolicy | None = None,
        retry: Retry | bool | None = None,
        dead_letter: str | None = None,
        max_workers: int = 1,
        prefetch: int | None = None,
        max_body_bytes: int | None = None,
        batch: bool = False,
        dependencies: Sequence[params.Depends] = (),
        middlewares: Sequence[Middleware] = (),
        decoder: codec.Decoder | None = None,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Endpoint[P, R]]:
        """Consume ``channel`` into the decorated function.

        ``channel`` may hold parameters (``"orders.{region}"``) that handlers receive like
        path parameters. Subscribers sharing a ``group`` compete for messages; without a
        group each gets every message. ``retry`` bounds deliveries of a failing message
        (``False`` for one), after which it is rejected or sent to ``dead_letter``.
        ``max_workers`` > 1 handles that many messages at once (order is then not kept).
        ``batch=True`` hands the handler what the broker delivered at once as a list
        (declare the body as ``items: list[Item]``). ``max_body_bytes`` overrides the
        router's limit for this subscriber.
        ``options`` are the broker's own subscriber options.
        """

        name = _channel_name("subscriber", channel, options)

        def register(func: Callable[P, R]) -> Endpoint[P, R]:
            endpoint = func if isinstance(func, Endpoint) else Endpoint(func)
            subscriber = Subscriber(
                name,
                endpoint,
                group=group,
                ack_policy=ack_policy,
                retry=_as_retry(retry),
                dead_letter=dead_letter,
                max_workers=max_workers,
                prefetch=prefetch,
                max_body_bytes=max_body_bytes,
                batch=batch,
                dependencies=[*self.dependencies, *dependencies],
                middlewares=middlewares,
                decoder=decoder,
                title=title,
                description=description,
                include_in_schema=include_in_schema and self.include_in_schema,
                options=options,
            )
            endpoint.subscribers.append(subscriber)
            self._subscribers.append(subscriber)
            if self._broker is None:
                self._pending_subscribers.append(subscriber)
            else:
                self._broker.add_subscriber(subscriber)
            return endpoint

        return register

    def publisher(
        self,
        channel: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        **options: Any,
    ) -> Publisher:
        """A publisher to ``channel``: ``await pub.publish(msg)``, or ``@pub`` on a handler
        to publish what it returns. ``options`` are the broker's own publish options."""
        name = _channel_name("publisher", channel, options)
        publisher = Publisher(
            name,
            headers=headers,
            title=title,
            description=description,
            include_in_schema=include_in_schema and self.include_in_schema,
            options=options,
        )
        self._publishers.append(publisher)
        if self._broker is None:
            self._pending_publishers.append(publisher)
        else:
            self._broker.add_publisher(publisher)
        return publisher

    # Reading the lifespan is what including this router in an app (or another router)
    # does: it is how the test broker knows an app's dependency_overrides may be missed.
    @property
    def lifespan_context(self) -> Any:
        self.included = True
        return self._lifespan_context

    @lifespan_context.setter
    def lifespan_context(self, value: Any) -> None:
        self._lifespan_context = value

    # -- hooks -------------------------------------------------------------------------

    def after_startup(self, hook: Hook) -> Hook:
        """Run ``hook(app)`` once the broker is connected and its subscribers run (at
        startup, or when a broker that was down answers). A mapping it returns is added
        to the lifespan state, for handlers (``State``) and for ``app.state``."""
        self.broker.startup_hooks.append(lambda: self._run_hook(hook))
        return hook

    def on_broker_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook(app)`` at shutdown, after the subscribers stopped and before the
        connection closes (the broker can still publish)."""
        self.broker.shutdown_hooks.append(lambda: self._run_hook(hook))
        return hook

    async def _run_hook(self, hook: Hook) -> None:
        result = hook(self._app)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Mapping):
            for key, value in result.items():
                setattr(self.broker.state, key, value)
                if self._app is not None:
                    setattr(self._app.state, key, value)

    def include_router(self, router: APIRouter, **options: Any) -> None:
        """Include ``router`` as ``APIRouter.include_router`` does.

        A StreamRouter without a broker of its own joins this router's broker. The
        message handlers of an included StreamRouter get this router's ``dependencies``
        and those given here, as its HTTP routes do.
        """
        super().include_router(router, **options)
        if not isinstance(router, StreamRouter):
            return
        dependencies = [*self.dependencies, *(options.get("dependencies") or ())]
        hidden = not (self.include_in_schema and options.get("include_in_schema", True))
        for subscriber in router._all_subscribers():
            subscriber.add_dependencies(dependencies)
            if hidden:
                subscriber.include_in_schema = False
        if hidden:
            for publisher in router._all_publishers():
                publisher.include_in_schema = False
        if not router._owns_broker:
            self._children.append(router)
            if self._broker is not None:
                router._attach(self._broker)

    def _all_subscribers(self) -> list[Subscriber]:
        """Subscribers registered on this router and on the routers it included."""
        found = list(self._subscribers)
        for child in self._children:
            found.extend(child._all_subscribers())
        return found

    def _all_publishers(self) -> list[Publisher]:
        """Publishers made by this router and by the routers it included."""
        found = list(self._publishers)
        for child in self._children:
            found.extend(child._all_publishers())
        return found

    def _attach(self, broker: StreamBroker) -> None:
        self._broker = broker
        for subscriber in self._pending_subscribers:
            broker.add_subscriber(subscriber)
        for publisher in self._pending_publishers:
            broker.add_publisher(publisher)
        self._pending_subscribers.clear()
        self._pending_publishers.clear()
        for child in self._children:
            child._attach(broker)

    # -- lifespan ----------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[Mapping[str, Any]]:
        if not self._owns_broker:
            if self._pending_subscribers:
                raise ConfigurationError(
                    "a StreamRouter without a broker has subscribers but was not included in "
                    "a StreamRouter with a broker: give it a URL, or include it in one"
                )
            async with self._user_state(app) as state:
                yield state
            return
        broker = self.broker
        broker.dependency_overrides_provider = app
        register_broker(app, broker)
        self._app = app
        # Whoever starts the broker closes it: a test broker around the app keeps its own.
        owner = not broker.started
        if owner:
            await broker.open()  # so that the lifespan below may publish
        try:
            async with self._user_state(app) as state:
                if owner:
                    await broker.start()
                    broker.logger.info(
                        "broker %s started with %d subscriber(s)",
                        broker.transport.describe(),
                        len(broker.subscribers),
                    )
                try:
                    yield state
                finally:
                    if owner:  # handlers finish while what the lifespan made still exists
                        await broker.stop()
        finally:
            if owner:
                try:
                    await broker.close()
                except Exception:
                    # An exception out of a lifespan shutdown is reported badly by servers.
                    broker.logger.exception("closing broker %s failed", broker.transport.describe())

    @asynccontextmanager
    async def _user_state(self, app: Any) -> AsyncIterator[Mapping[str, Any]]:
        if self._user_lifespan is None:
            yield {}
            return
        async with self._user_lifespan(app) as state:
            state = dict(state or {})
            if self._broker is not None:
                for key, value in state.items():
                    setattr(self._broker.state, key, value)
            yield state


def _as_retry(retry: Retry | bool | None) -> Retry | None:
    if retry is None or retry is True:
        return None
    if retry is False:
        return NO_RETRY
    return retry


def _channel_name(what: str, channel: object, options: Mapping[str, Any]) -> str:
    """``channel`` if it is a name; else a ConfigurationError that says what to write,
    for the spellings of FastStream and of the broker routers (``list="jobs"``,
    ``RabbitQueue("out")``) given where a channel name belongs."""
    if isinstance(channel, str) and channel:
        return channel
    if channel is None:
        given = ", ".join(f"{key}={value!r}" for key, value in options.items()) or "nothing"
        named = next(((k, v) for k, v in options.items() if isinstance(v, str)), None)
        example = f"{what}({named[1]!r}, {named[0]}=True)" if named else f"{what}('jobs')"
        raise ConfigurationError(
            f"{what}() needs a channel name as its first argument (given: {given}). "
            f"Broker options such as list=, stream= or exchange= are what the broker's own "
            f"router takes (RedisRouter, NatsRouter, RabbitRouter, KafkaRouter...); on a "
            f"StreamRouter, name the channel and pass the option after it: {example}"
        )
    raise ConfigurationError(
        f"{what}() takes a channel name (str), not {type(channel).__name__} {channel!r}: "
        f"give its name ({what}({getattr(channel, 'name', 'name')!r})), or use the "
        "broker's own router, which accepts its option objects"
    )
