"""Call plans: a handler's signature read once with FastAPI's rules, then run per message.

This is the only module that talks to FastAPI's dependency machinery. At registration,
every parameter of the handler and of its dependencies is classified with FastAPI's own
``analyze_param`` (so ``Depends``, ``Header``, ``Path``, ``Body`` and ``Annotated`` mean
exactly what they mean on an HTTP route). The result is a :class:`CallPlan` that, per
message, validates the body straight from bytes with pydantic-core and solves
dependencies only when the handler has some.

Where a message differs from a request:

* the body parameters (anything not a header, a path parameter, a dependency or a context
  value) share one body: a single one receives the whole body, several receive the fields
  of a JSON object, as with ``Body(embed=True)``;
* ``Path`` parameters come from the channel pattern (``"orders.{region}"``);
* ``Header`` parameters come from the message headers, by alias or by name;
* values are injected by type: :class:`StreamMessage`, :class:`logging.Logger`, the broker,
  the lifespan :class:`~starlette.datastructures.State`, and ``BackgroundTasks``, which run
  after the handler returned (see :meth:`CallContext.run_background`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

from fastapi import params
from fastapi.concurrency import contextmanager_in_threadpool
from fastapi.dependencies.utils import analyze_param, get_typed_signature
from pydantic import BaseModel, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import SchemaValidator
from starlette.concurrency import run_in_threadpool

from fastapi_stream.core import codec
from fastapi_stream.core.context import CallContext, ContextKind, context_kind
from fastapi_stream.core.errors import ConfigurationError, PayloadError
from fastapi_stream.core.message import StreamMessage

__all__ = ["CallContext", "CallPlan", "ContextKind"]  # the context's names, re-exported

_Undefined: Any = object()


@dataclass(slots=True)
class _Field:
    """A ``Header`` or ``Path`` parameter."""

    name: str
    source: str  # "headers" or "path"
    keys: tuple[str, ...]  # where to look, first match wins
    adapter: TypeAdapter[Any]
    default: Any  # _Undefined when required


@dataclass(slots=True)
class _BodyParam:
    name: str
    annotation: Any
    field_info: FieldInfo


@dataclass(slots=True, eq=False)
class _Callable:
    """The handler or one of its dependencies, with its parameters classified."""

    call: Callable[..., Any]
    name: str | None  # the parameter it feeds in its parent; None for `dependencies=[...]`
    use_cache: bool
    kind: str  # "async", "sync", "async_gen" or "gen"
    context: list[tuple[str, ContextKind]] = field(default_factory=list)
    fields: list[_Field] = field(default_factory=list)
    body: list[_BodyParam] = field(default_factory=list)
    dependencies: list[_Callable] = field(default_factory=list)

    def walk(self) -> Iterator[_Callable]:
        yield self
        for dependency in self.dependencies:
            yield from dependency.walk()


def _call_kind(call: Callable[..., Any]) -> str:
    target: Any = call
    if not (inspect.isroutine(target) or inspect.isclass(target)):
        target = getattr(target, "__call__", target)  # noqa: B004 - callable objects
    target = inspect.unwrap(target)
    if inspect.isasyncgenfunction(target):
        return "async_gen"
    if inspect.isgeneratorfunction(target):
        return "gen"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


_UNSUPPORTED = (params.Cookie, params.Form, params.File)


def _analyse(
    call: Callable[..., Any], *, name: str | None, use_cache: bool, path_params: set[str]
) -> _Callable:
    where = getattr(call, "__qualname__", repr(call))
    node = _Callable(call=call, name=name, use_cache=use_cache, kind=_call_kind(call))
    for param in get_typed_signature(call).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        context = context_kind(param.annotation)
        if context is not None:
            node.context.append((param.name, context))
            continue
        details = analyze_param(
            param_name=param.name,
            annotation=param.annotation,
            value=param.default,
            path_param_names=path_params,
        )
        if details.depends is not None:
            dependency = details.depends.dependency
            assert dependency is not None
            node.dependencies.append(
                _analyse(
                    dependency,
                    name=param.name,
                    use_cache=details.depends.use_cache,
                    path_params=path_params,
                )
            )
            continue
        info = details.field.field_info if details.field is not None else None
        if info is None:
            raise ConfigurationError(
                f"{where}: parameter {param.name!r} is an HTTP-only type (Request, Response, "
                "WebSocket...); message handlers receive the message as `msg: StreamMessage`"
            )
        if isinstance(info, _UNSUPPORTED):
            raise ConfigurationError(
                f"{where}: parameter {param.name!r} uses {type(info).__name__}(), which has "
                "no meaning for a message; use Header(), Path() or the body"
            )
        if isinstance(info, params.Path | params.Header):
            node.fields.append(_make_field(param.name, info, where))
        else:  # Body, and Query which a message does not have: both read the body
            node.body.append(_BodyParam(param.name, info.annotation, info))
    return node


def _adapter_for(annotation: Any, info: FieldInfo) -> TypeAdapter[Any]:
    """A validator for ``annotation`` with the constraints declared in ``info``."""
    annotated: Any = Annotated[annotation, info]
    return TypeAdapter(annotated)


def _make_field(name: str, info: FieldInfo, where: str) -> _Field:
    keys: tuple[str, ...]
    if isinstance(info, params.Path):
        source, keys = "path", (name,)
    else:
        source = "headers"
        alias = info.alias or name
        keys = (alias, name) if alias != name else (name,)
    default = _Undefined if info.is_required() else info.get_default(call_default_factory=True)
    try:
        adapter = _adapter_for(info.annotation, info)
    except Exception as exc:  # pydantic raises several types for unusable annotations
        raise ConfigurationError(f"{where}: parameter {name!r} cannot be validated: {exc}") from exc
    return _Field(name, source, keys, adapter, default)


class _Body:
    """Validates the message body for every body parameter of a call tree at once."""

    def __init__(self, body_params: Sequence[_BodyParam], where: str) -> None:
        self.names = tuple(p.name for p in body_params)
        self.embed = len(body_params) > 1 or any(
            getattr(p.field_info, "embed", False) for p in body_params
        )
        self._model: type[BaseModel] | None = None
        self._adapter: TypeAdapter[Any] | None = None
        self._default: Any = _Undefined
        try:
            if self.embed:
                self._model = create_model(  # type: ignore[call-overload]
                    "MessageBody",
                    **{p.name: (p.annotation, p.field_info) for p in body_params},
                )
            elif body_params:
                (only,) = body_params
                self._adapter = _adapter_for(only.annotation, only.field_info)
                if not only.field_info.is_required():
                    self._default = only.field_info.get_default(call_default_factory=True)
        except Exception as exc:
            raise ConfigurationError(
                f"{where}: the message body cannot be validated: {exc}"
            ) from exc
        target = self._model or self._adapter
        self._validate_json: Callable[[bytes], Any]
        self._validate_python: Callable[[Any], Any]
        if isinstance(target, TypeAdapter):
            # The built validator itself where there is one: the adapter's wrapper costs
            # a quarter of a small model's validation.
            found = target.validator
            validator = found if isinstance(found, SchemaValidator) else target
            self._validate_json = validator.validate_json
            self._validate_python = validator.validate_python
        elif target is not None:
            self._validate_json = target.model_validate_json
            self._validate_python = target.model_validate

    @property
    def json_schema_source(self) -> TypeAdapter[Any] | type[BaseModel] | None:
        return self._model or self._adapter

    def validate(self, message: StreamMessage, decoder: codec.Decoder | None) -> dict[str, Any]:
        if not self.names:
            return {}
        body = message.body
        try:
            if self._adapter is not None:
                if not body and self._default is not _Undefined:
                    return {self.names[0]: self._default}
                return {self.names[0]: self._validate(body, message, decoder)}
            model = self._validate(body, message, decoder)
            return {name: getattr(model, name) for name in self.names}
        except ValidationError as exc:
            raise PayloadError(
                "invalid message body",
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)],
            ) from None
        except ValueError as exc:  # a custom decoder or the text decoding failed
            raise PayloadError(f"undecodable message body ({exc})") from None

    def _validate(self, body: bytes, message: StreamMessage, decoder: codec.Decoder | None) -> Any:
        content_type = message.content_type
        if decoder is not None:
            return self._validate_python(decoder(body, content_type))
        kind = codec.media_type(content_type)
        if kind is None or kind == codec.JSON:
            try:
                return self._validate_json(body)
            except ValidationError as exc:
                # No content type and not JSON: a plain producer's text or bytes.
                if kind is not None or exc.errors()[0]["type"] != "json_invalid":
                    raise
        return self._validate_python(codec.decode(body, content_type))


def _validate_fields(fields: Sequence[_Field], message: StreamMessage) -> dict[str, Any]:
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for f in fields:
        source: Mapping[str, str] = message.headers if f.source == "headers" else message.path
        raw = next((source[key] for key in f.keys if key in source), _Undefined)
        if raw is _Undefined:
            if f.default is _Undefined:
                errors.append(
                    {"loc": (f.source, f.keys[0]), "msg": "Field required", "type": "missing"}
                )
            else:
                values[f.name] = f.default
            continue
        try:
            values[f.name] = f.adapter.validate_python(raw)
        except ValidationError as exc:
            errors.extend(
                {**e, "loc": (f.source, f.keys[0], *e["loc"])}
                for e in exc.errors(include_input=False)
            )
    if errors:
        raise PayloadError("invalid message metadata", errors)
    return values


class CallPlan:
    """A handler with its parameters classified; ``await plan.run(message, ctx)`` calls it.

    Raises :class:`PayloadError` when the message does not fit the signature, before any
    dependency runs.
    """

    def __init__(
        self,
        call: Callable[..., Any],
        *,
        path_params: Sequence[str] = (),
        dependencies: Sequence[params.Depends] = (),
        decoder: codec.Decoder | None = None,
        batch: bool = False,
    ) -> None:
        where = getattr(call, "__qualname__", repr(call))
        self.batch = batch
        self._path_params = set(path_params)
        self._root = _analyse(call, name=None, use_cache=True, path_params=self._path_params)
        extra: list[_Callable] = []
        for depends in dependencies:
            if depends.dependency is None:
                raise ConfigurationError(f"{where}: dependencies=[...] needs Depends(callable)")
            extra.append(
                _analyse(
                    depends.dependency,
                    name=None,
                    use_cache=depends.use_cache,
                    path_params=self._path_params,
                )
            )
        self._root.dependencies[:0] = extra  # they run first, in the order given
        nodes = list(self._root.walk())
        body_params: dict[str, _BodyParam] = {}
        fields: dict[str, _Field] = {}
        for node in nodes:
            for param in node.body:
                body_params.setdefault(param.name, param)
            for f in node.fields:
                fields.setdefault(f.name, f)
        if batch:
            self._batch_name, item = _batch_item(list(body_params.values()), fields, where)
            body_params = {self._batch_name: item}
        self._body = _Body(list(body_params.values()), where)
        self._fields = tuple(fields.values())
        self._decoder = decoder
        self._simple = not self._root.dependencies
        #: Whether ``run`` reads its ``ctx``; a body-only handler is called without one.
        self.needs_context = bool(self._root.dependencies or self._root.context)
        self._override_nodes: dict[Callable[..., Any], _Callable] = {}
        self.call = call
        self.is_async = self._root.kind == "async"

    @property
    def body_schema_source(self) -> TypeAdapter[Any] | type[BaseModel] | None:
        """What describes the body (for AsyncAPI documents)."""
        return self._body.json_schema_source

    @property
    def header_fields(self) -> dict[str, tuple[TypeAdapter[Any], bool]]:
        """The ``Header()`` parameters by the header each reads: what describes the value
        and whether the header is required (for AsyncAPI documents)."""
        return {
            f.keys[0]: (f.adapter, f.default is _Undefined)
            for f in self._fields
            if f.source == "headers"
        }

    @property
    def has_dependencies(self) -> bool:
        return not self._simple

    async def run(self, message: StreamMessage, ctx: CallContext | None) -> Any:
        """Validate ``message`` and call the handler with it."""
        values = self._body.validate(message, self._decoder)
        if self._fields:
            values.update(_validate_fields(self._fields, message))
        return await self._call(values, ctx)

    def validate_item(self, message: StreamMessage) -> Any:
        """A batch handler's view of one message: its body validated as a list item."""
        return self._body.validate(message, self._decoder)[self._batch_name]

    async def run_batch(self, items: list[Any], ctx: CallContext | None) -> Any:
        """Call a batch handler with items from :meth:`validate_item`; its context and
        dependencies see the first message of the batch."""
        return await self._call({self._batch_name: items}, ctx)

    async def _call(self, values: dict[str, Any], ctx: CallContext | None) -> Any:
        root = self._root
        if self._simple:
            kwargs = _arguments(root, values, ctx) if ctx is not None else values
            if root.kind == "async":
                return await root.call(**kwargs)
            return await run_in_threadpool(root.call, **kwargs)
        assert ctx is not None, "a plan with dependencies needs a CallContext"
        async with AsyncExitStack() as stack:
            solver = _Solver(self, values, ctx, stack)
            kwargs = await solver.arguments(root)
            if root.kind == "async":
                return await root.call(**kwargs)
            return await run_in_threadpool(root.call, **kwargs)

    def _override(self, node: _Callable, replacement: Callable[..., Any]) -> _Callable:
        found = self._override_nodes.get(replacement)
        if found is None:
            found = _analyse(
                replacement, name=node.name, use_cache=node.use_cache, path_params=self._path_params
            )
            self._override_nodes[replacement] = found
        return found


def _batch_item(
    body: Sequence[_BodyParam], fields: Mapping[str, _Field], where: str
) -> tuple[str, _BodyParam]:
    """The one list parameter of a batch handler, and how to validate one of its items."""
    if fields:
        raise ConfigurationError(
            f"{where}: a batch handler cannot take Header() or Path() parameters; "
            "declare `msg: StreamMessage` for the first message's metadata"
        )
    if len(body) != 1 or get_origin(body[0].annotation) not in (list, Sequence, tuple):
        raise ConfigurationError(
            f"{where}: a batch handler takes exactly one body parameter, typed as a list "
            "(for example `orders: list[Order]`)"
        )
    (param,) = body
    args = get_args(param.annotation)
    item_type = args[0] if args else Any
    return param.name, _BodyParam(param.name, item_type, FieldInfo(annotation=item_type))


def _arguments(node: _Callable, values: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
    kwargs = {name: ctx.get(kind) for name, kind in node.context}
    for f in node.fields:
        kwargs[f.name] = values[f.name]
    for p in node.body:
        kwargs[p.name] = values[p.name]
    return kwargs


class _Solver:
    """Solves one message's dependencies: overrides, per-message caching, ``yield`` cleanup."""

    def __init__(
        self, plan: CallPlan, values: dict[str, Any], ctx: CallContext, stack: AsyncExitStack
    ) -> None:
        self.plan = plan
        self.values = values
        self.ctx = ctx
        self.stack = stack
        self.cache: dict[Callable[..., Any], Any] = {}

    async def arguments(self, node: _Callable) -> dict[str, Any]:
        kwargs = _arguments(node, self.values, self.ctx)
        for dependency in node.dependencies:
            value = await self.solve(dependency)
            if dependency.name is not None:
                kwargs[dependency.name] = value
        return kwargs

    async def solve(self, node: _Callable) -> Any:
        replacement = self.ctx.overrides.get(node.call)
        if replacement is not None:
            node = self.plan._override(node, replacement)
            self._validate_new_params(node)
        if node.use_cache and node.call in self.cache:
            return self.cache[node.call]
        kwargs = await self.arguments(node)
        call = node.call
        if node.kind == "async":
            value = await call(**kwargs)
        elif node.kind == "sync":
            value = await run_in_threadpool(call, **kwargs)
        elif node.kind == "async_gen":
            value = await self.stack.enter_async_context(asynccontextmanager(call)(**kwargs))
        else:
            cm = contextmanager_in_threadpool(contextmanager(call)(**kwargs))
            value = await self.stack.enter_async_context(cm)
        self.cache[node.call] = value
        return value

    def _validate_new_params(self, node: _Callable) -> None:
        """An override may declare parameters the original did not; validate those now."""
        new_fields = [f for n in node.walk() for f in n.fields if f.name not in self.values]
        if new_fields:
            self.values.update(_validate_fields(new_fields, self.ctx.message))
        new_body = [p for n in node.walk() for p in n.body if p.name not in self.values]
        if new_body:
            decoded = self.ctx.message.decode()
            source = decoded if isinstance(decoded, dict) and len(new_body) > 1 else None
            for param in new_body:
                raw = source.get(param.name) if source is not None else decoded
                adapter = _adapter_for(param.annotation, param.field_info)
                try:
                    self.values[param.name] = adapter.validate_python(raw)
                except ValidationError as exc:
                    raise PayloadError(
                        "invalid message body",
                        [
                            {**e, "loc": ("body", *e["loc"])}
                            for e in exc.errors(include_input=False)
                        ],
                    ) from None
