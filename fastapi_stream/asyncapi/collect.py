"""Reading an app into a :class:`~fastapi_stream.asyncapi.models.Spec`.

Which StreamRouters belong to an app: the docs routes a StreamRouter adds are its trace.
Each docs endpoint is registered here with a weak reference to its router; walking the
app's routes finds those endpoints again, whatever the prefixes and nesting, hence the
routers, hence their brokers. This works whether ``include_router`` copies the routes
(older FastAPI) or keeps the included router (newer FastAPI, walked with FastAPI's own
``iter_route_contexts``). Nothing is kept per app, nothing needs the lifespan, and a router
that is garbage-collected leaves the registry.
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import routing

from fastapi_stream.asyncapi import servers
from fastapi_stream.asyncapi.models import (
    JSON,
    Channel,
    Element,
    Info,
    Message,
    Operation,
    Server,
    Spec,
)
from fastapi_stream.asyncapi.schemas import REF_PREFIX, SchemaSet, component_name, renamed_model
from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber

if TYPE_CHECKING:
    from fastapi_stream.router import StreamRouter

__all__ = ["collect", "register_docs_endpoint", "stream_routers"]

# Docs endpoint -> the StreamRouter that added it. The endpoint's closure keeps the router
# alive, so the router is held weakly here and nothing leaks.
_docs_endpoints: weakref.WeakKeyDictionary[Callable[..., Any], weakref.ref[StreamRouter]] = (
    weakref.WeakKeyDictionary()
)


def register_docs_endpoint(endpoint: Callable[..., Any], router: StreamRouter) -> None:
    _docs_endpoints[endpoint] = weakref.ref(router)


def stream_routers(app: Any) -> list[StreamRouter]:
    """The StreamRouters with docs routes in ``app`` (a FastAPI app or any router), in
    route order."""
    found: list[StreamRouter] = []
    for route in _routes(app):
        endpoint = getattr(route, "endpoint", None)
        try:
            ref = _docs_endpoints.get(endpoint) if endpoint is not None else None
        except TypeError:  # an unhashable endpoint is not one of ours
            ref = None
        router = ref() if ref is not None else None
        if router is not None and router not in found:
            found.append(router)
    return found


def _routes(app: Any) -> list[Any]:
    """Every route of ``app``, those of included routers too."""
    routes = list(getattr(app, "routes", ()))
    flatten = getattr(routing, "iter_route_contexts", None)
    if flatten is None:  # FastAPI copied the routes of included routers into the app
        return routes
    return [context.original_route for context in flatten(routes)]


def collect(
    app: Any,
    *,
    asyncapi_version: str,
    routers: Iterable[StreamRouter] | None = None,
    **info: Any,
) -> Spec:
    """What ``app`` consumes and produces; ``info`` overrides the app's metadata
    (``title``, ``version``, ``description``, ``contact``, ``license_info``, ``tags``)."""
    spec = Spec(info=_info(app, info))
    brokers: list[StreamBroker] = []
    for router in stream_routers(app) if routers is None else routers:
        if router.has_broker and all(router.broker is not b for b in brokers):
            brokers.append(router.broker)
    schemas = SchemaSet()
    for broker in brokers:
        _Reader(spec, broker, schemas, asyncapi_version).read()
    spec.schemas = schemas.resolve()
    for operation in spec.operations:
        for message in (operation.message, operation.reply):
            if message is not None and not message.examples:
                message.examples = _examples(message.payload, spec.schemas)
    return spec


def _info(app: Any, given: Mapping[str, Any]) -> Info:
    def pick(key: str, attribute: str, default: Any = None) -> Any:
        value = given.get(key)
        return value if value is not None else getattr(app, attribute, default)

    license_info = pick("license_info", "license_info")
    tags = pick("tags", "openapi_tags") or []
    return Info(
        title=pick("title", "title", "fastapi-stream") or "fastapi-stream",
        version=pick("version", "version", "0.1.0") or "0.1.0",
        description=pick("description", "description") or None,
        terms_of_service=pick("terms_of_service", "terms_of_service"),
        contact=_only(pick("contact", "contact"), ("name", "url", "email")),
        license=_only(license_info, ("name", "url")),
        tags=[t for t in (_only(t, ("name", "description", "externalDocs")) for t in tags) if t],
    )


def _only(value: Any, keys: tuple[str, ...]) -> JSON | None:
    """The AsyncAPI fields of an OpenAPI object (AsyncAPI forbids the others)."""
    if not isinstance(value, Mapping):
        return None
    return {k: value[k] for k in keys if value.get(k) is not None} or None


def _examples(payload: JSON, schemas: Mapping[str, JSON]) -> list[JSON]:
    """Message examples from the payload model's own ``examples``."""
    ref = payload.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        payload = schemas.get(ref[len(REF_PREFIX) :], {})
    found = payload.get("examples")
    return [{"payload": e} for e in found] if isinstance(found, list) else []


class _Reader:
    """Reads one broker: its server, then a receive operation per subscriber and a send
    operation per publisher."""

    def __init__(
        self, spec: Spec, broker: StreamBroker, schemas: SchemaSet, asyncapi_version: str
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.schemas = schemas
        self.version = asyncapi_version
        self._bindings = getattr(broker.transport, "asyncapi_bindings", None)
        protocol, host, pathname = servers.address(broker.transport)
        self.server = Server(
            name=_unique(component_name(protocol), {s.name for s in spec.servers}),
            protocol=protocol,
            host=host,
            pathname=pathname,
            bindings=self.bindings("server", None),
        )
        spec.servers.append(self.server)

    def bindings(self, element: Element, source: Any) -> JSON:
        if self._bindings is None:
            return {}
        return dict(self._bindings(element, source, self.version) or {})

    def read(self) -> None:
        returns: dict[int, list[Any]] = {}  # publisher id -> return types of its handlers
        publishers: list[Publisher] = list(self.broker.publishers)
        for subscriber in self.broker.subscribers:
            result = _return_type(subscriber.endpoint.func)
            for publisher in subscriber.endpoint.publishers:
                if all(publisher is not p for p in publishers):
                    publishers.append(publisher)
                if result is not None:
                    returns.setdefault(id(publisher), []).append(result)
            if subscriber.include_in_schema:
                self.receive(subscriber, result)
        for publisher in publishers:
            if publisher.include_in_schema:
                self.send(publisher, returns.get(id(publisher), []))

    def receive(self, subscriber: Subscriber, result: Any) -> None:
        name = getattr(subscriber.endpoint.func, "__name__", "handler")
        op_id = self.operation_id(name)
        message = Message(name=f"{op_id}_message", bindings=self.bindings("message", subscriber))
        source = subscriber.plan.body_schema_source
        if isinstance(source, type) and source.__name__ == "MessageBody":
            # Several body parameters share one generated model: name it after the handler.
            source = renamed_model(source, f"{component_name(op_id)}_payload")
        if source is not None:
            self.schemas.add(source, "validation", _setter(message, "payload"))
        self.add_headers(message, subscriber.plan.header_fields)
        reply = None
        if result is not None:
            reply = Message(name=f"{op_id}_reply")
            self.schemas.add(result, "serialization", _setter(reply, "payload"))
        self.spec.operations.append(
            Operation(
                id=op_id,
                action="receive",
                channel=self.channel(subscriber.channel, subscriber),
                message=message,
                title=subscriber.title,
                description=subscriber.description,
                reply=reply,
                bindings=self.bindings("operation", subscriber),
            )
        )

    def send(self, publisher: Publisher, results: list[Any]) -> None:
        op_id = self.operation_id(f"send_{publisher.channel}")
        message = Message(name=f"{op_id}_message", bindings=self.bindings("message", publisher))
        if len(results) == 1:
            self.schemas.add(results[0], "serialization", _setter(message, "payload"))
        elif results:
            variants: list[JSON] = [{} for _ in results]
            message.payload = {"oneOf": variants}
            for i, result in enumerate(results):
                self.schemas.add(result, "serialization", _item_setter(variants, i))
        if publisher.headers:
            message.headers = {
                "type": "object",
                "properties": {
                    k: {"type": "string", "default": v} for k, v in publisher.headers.items()
                },
            }
        self.spec.operations.append(
            Operation(
                id=op_id,
                action="send",
                channel=self.channel(ChannelPattern.parse(publisher.channel), publisher),
                message=message,
                title=publisher.title,
                description=publisher.description,
                bindings=self.bindings("operation", publisher),
            )
        )

    def add_headers(self, message: Message, fields: Mapping[str, tuple[Any, bool]]) -> None:
        if not fields:
            return
        properties: JSON = {}
        message.headers = {"type": "object", "properties": properties}
        required = [name for name, (_, needed) in fields.items() if needed]
        if required:
            message.headers["required"] = required
        for name, (adapter, _) in fields.items():
            self.schemas.add(adapter, "validation", _item_setter(properties, name))

    def channel(self, pattern: ChannelPattern, source: Subscriber | Publisher) -> Channel:
        for channel in self.spec.channels:
            if channel.address == pattern.template and channel.server == self.server.name:
                return channel
        key = component_name(pattern.template.replace("{", "").replace("}", ""))
        taken = {c.key for c in self.spec.channels}
        if key in taken:
            key = _unique(f"{key}_{self.server.name}", taken)
        channel = Channel(
            key=key,
            address=pattern.template,
            server=self.server.name,
            parameters={name: {} for name in pattern.params},
            bindings=self.bindings("channel", source),
        )
        self.spec.channels.append(channel)
        return channel

    def operation_id(self, wanted: str) -> str:
        return _unique(component_name(wanted), {o.id for o in self.spec.operations})


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _setter(message: Message, attribute: str) -> Callable[[JSON], None]:
    def apply(schema: JSON) -> None:
        setattr(message, attribute, schema)

    return apply


def _item_setter(container: Any, key: Any) -> Callable[[JSON], None]:
    def apply(schema: JSON) -> None:
        container[key] = schema

    return apply


def _return_type(func: Callable[..., Any]) -> Any:
    """What ``func`` is declared to return, ``None`` when nothing or nothing known."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references
        return None
    result = hints.get("return")
    if result is None or result is type(None):
        return None
    return result
