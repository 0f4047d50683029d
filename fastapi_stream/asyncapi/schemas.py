"""JSON Schemas for payloads and headers, written in one pass.

Every type of a document goes through one ``TypeAdapter.json_schemas`` call, so nested
models, enums and generics become named schemas under ``#/components/schemas`` with unique
names (two models called ``Order`` in two modules get two entries) and every ``$ref``
points at one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

__all__ = ["REF_PREFIX", "SchemaSet", "component_name", "lone_refs", "renamed_model"]

JSON = dict[str, Any]
REF_PREFIX = "#/components/schemas/"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def component_name(name: str) -> str:
    """``name`` as a key the AsyncAPI schema accepts (and a ``$ref`` can hold as is)."""
    return _UNSAFE.sub("_", name).strip("_") or "_"


class SchemaSet:
    """Collects types with a callback each, then :meth:`resolve` hands every callback its
    schema and returns the named schemas they refer to."""

    def __init__(self) -> None:
        self._pending: list[tuple[TypeAdapter[Any], JsonSchemaMode, Callable[[JSON], None]]] = []

    def add(
        self,
        source: Any,
        mode: JsonSchemaMode,
        apply: Callable[[JSON], None],
    ) -> None:
        """Describe ``source`` (a ``TypeAdapter``, a model class or any annotation) in
        ``mode`` ("validation" for what a handler accepts, "serialization" for what it
        returns) and pass the schema to ``apply``. A type pydantic cannot describe gets
        ``{}`` (any value)."""
        try:
            adapter = source if isinstance(source, TypeAdapter) else TypeAdapter(source)
        except Exception:  # arbitrary classes, forward references that do not resolve
            apply({})
            return
        self._pending.append((adapter, mode, apply))

    def resolve(self) -> dict[str, JSON]:
        try:
            return _write(self._pending)
        except Exception:  # one type pydantic cannot describe: leave it out, keep the rest
            usable = []
            for adapter, mode, apply in self._pending:
                if _describable(adapter, mode):
                    usable.append((adapter, mode, apply))
                else:
                    apply({})
            return _write(usable)


def _write(
    pending: list[tuple[TypeAdapter[Any], JsonSchemaMode, Callable[[JSON], None]]],
) -> dict[str, JSON]:
    if not pending:
        return {}
    inputs = [(i, mode, adapter) for i, (adapter, mode, _) in enumerate(pending)]
    by_key, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF_PREFIX + "{model}")
    for (i, _mode), schema in by_key.items():
        pending[i][2](lone_refs(schema))
    return {name: lone_refs(schema) for name, schema in definitions.get("$defs", {}).items()}


def lone_refs(node: Any) -> Any:
    """``node`` with every ``$ref`` alone in its object: JSON Schema draft-07 (AsyncAPI's)
    ignores what sits beside a ``$ref``, such as the ``default`` pydantic writes next to an
    enum's, so a ``$ref`` with siblings moves into an ``allOf``. Changes ``node`` in place."""
    if isinstance(node, dict):
        for value in node.values():
            lone_refs(value)
        if "$ref" in node and len(node) > 1:
            node["allOf"] = [{"$ref": node.pop("$ref")}, *node.get("allOf", ())]
    elif isinstance(node, list):
        for item in node:
            lone_refs(item)
    return node


def _describable(adapter: TypeAdapter[Any], mode: JsonSchemaMode) -> bool:
    """Whether pydantic can write a JSON Schema for ``adapter`` (one bad type would
    otherwise spoil the whole document)."""
    try:
        adapter.json_schema(mode=mode)
    except Exception:
        return False
    return True


def renamed_model(model: type[BaseModel], name: str) -> type[BaseModel]:
    """``model`` under another schema name (for the body model of a handler with several
    body parameters, which is called ``MessageBody`` whatever the handler)."""
    return type(name, (model,), {"__module__": model.__module__})
