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

import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import routing

from fastapi_stream.asyncapi.models import JSON, Info, Spec
from fastapi_stream.asyncapi.reader import BrokerReader
from fastapi_stream.asyncapi.schemas import REF_PREFIX, SchemaSet
from fastapi_stream.core.broker import StreamBroker

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
    brokers: list[tuple[StreamBroker, StreamRouter]] = []
    for router in stream_routers(app) if routers is None else routers:
        if router.has_broker and all(router.broker is not b for b, _ in brokers):
            brokers.append((router.broker, router))
    schemas = SchemaSet()
    for broker, owner in brokers:
        BrokerReader(spec, broker, owner, schemas, asyncapi_version).read()
    spec.schemas = schemas.resolve()
    for operation in spec.operations:
        for message in (operation.message, operation.reply):
            if message is not None and not message.examples:
                message.examples = _examples(message.payload, spec.schemas)
    _locate_parameters(spec)
    return spec


def _locate_parameters(spec: Spec) -> None:
    """Describe each ``{param}`` of a channel address; where every message of the channel
    carries a payload field of that name, that field is its ``location`` (so a client can
    fill in the address from the message it sends)."""
    for channel in spec.channels:
        payloads = [
            _resolved(o.message.payload, spec.schemas)
            for o in spec.operations
            if o.channel is channel
        ]
        for name, parameter in channel.parameters.items():
            parameter.setdefault("description", f"The {{{name}}} part of the address.")
            if payloads and all(name in p.get("properties", {}) for p in payloads):
                parameter["location"] = f"$message.payload#/{name}"


def _info(app: Any, given: Mapping[str, Any]) -> Info:
    def pick(key: str, attribute: str, default: Any = None) -> Any:
        value = given.get(key)
        return value if value is not None else getattr(app, attribute, default)

    license_info = pick("license_info", "license_info")
    tags = pick("tags", "openapi_tags") or []
    # FastAPI has no field for it: the app's state holds it (app.state.asyncapi_id = ...).
    document_id = given.get("asyncapi_id") or getattr(
        getattr(app, "state", None), "asyncapi_id", None
    )
    return Info(
        document_id=document_id or None,
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


def _resolved(payload: JSON, schemas: Mapping[str, JSON]) -> JSON:
    ref = payload.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        return schemas.get(ref[len(REF_PREFIX) :], {})
    return payload


def _examples(payload: JSON, schemas: Mapping[str, JSON]) -> list[JSON]:
    """Message examples from the payload model's own ``examples``."""
    found = _resolved(payload, schemas).get("examples")
    return [{"payload": e} for e in found] if isinstance(found, list) else []
