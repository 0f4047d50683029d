"""Checking a document: against the official AsyncAPI JSON Schema of its version, and that
every local ``$ref`` points at something.

The official schemas come from the npm package ``@asyncapi/specs`` (``npm install
@asyncapi/specs``; ``make install`` does it for this repository): they are looked up in
``$FASTAPI_STREAM_ASYNCAPI_SPECS``, then in ``node_modules/@asyncapi/specs/schemas`` of the
working directory or any directory above it. Validation needs ``jsonschema``, which the
``cli`` extra installs; the schema alone does not look inside ``$ref`` strings, hence the
second check. Every binding object is also checked against the official schema of its
protocol, version and element (``bindings/<protocol>/<version>/<element>.json`` in the
same package): a 2.6.0 document's schema does not look inside bindings at all.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SPEC_VERSIONS", "binding_problems", "binding_schema", "unresolved_refs", "validate"]

SPECS_ENV = "FASTAPI_STREAM_ASYNCAPI_SPECS"
_NPM_PATH = Path("node_modules", "@asyncapi", "specs", "schemas")
SPEC_VERSIONS = ("3.0.0", "2.6.0")
_MESSAGE_LIMIT = 300


def validate(document: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``document``, one line per problem; empty when it is valid."""
    version = document.get("asyncapi")
    if version not in SPEC_VERSIONS:
        return [f"asyncapi: version {version!r} is not one of {', '.join(SPEC_VERSIONS)}"]
    problems = []
    for error in sorted(_validator(version).iter_errors(document), key=lambda e: list(e.path)):
        error = _closest(error)
        where = "/".join(str(part) for part in error.absolute_path) or "(document)"
        message = str(error.message)
        if len(message) > _MESSAGE_LIMIT:
            message = message[:_MESSAGE_LIMIT] + "..."
        problems.append(f"{where}: {message}")
    problems.extend(unresolved_refs(document))
    problems.extend(binding_problems(document))
    return problems


def binding_problems(document: Mapping[str, Any]) -> list[str]:
    """The bindings of ``document`` that their official schema refuses. A binding whose
    protocol, version and element have no official schema (Redis has none; ``custom``
    versions) is left to the document's schema."""
    problems = []
    for where, element, protocol, binding in _bindings(document, ""):
        version = binding.get("bindingVersion") if isinstance(binding, Mapping) else None
        schema = binding_schema(protocol, str(version), element) if version else None
        if schema is None:
            continue
        for error in _binding_validator(protocol, str(version), element).iter_errors(binding):
            error = _closest(error)
            inside = "/".join(str(part) for part in error.absolute_path)
            problems.append(f"{where}/{protocol}{'/' + inside if inside else ''}: {error.message}")
    return problems


def binding_schema(protocol: str, version: str, element: str) -> dict[str, Any] | None:
    """The official JSON Schema of a binding, ``None`` when ``@asyncapi/specs`` has none."""
    path = specs_dir().parent / "bindings" / protocol / version / f"{element}.json"
    if not path.is_file():
        return None
    found: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return found


_ELEMENTS = {"servers": "server", "channels": "channel", "operations": "operation"}


def _bindings(node: Any, where: str) -> Iterator[tuple[str, str, str, Any]]:
    """``(where, element, protocol, binding)`` for every binding object in ``node``."""
    if isinstance(node, list):
        for i, value in enumerate(node):
            yield from _bindings(value, f"{where}/{i}")
        return
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        here = f"{where}/{key}" if where else str(key)
        if key == "bindings" and isinstance(value, Mapping):
            element = _element(where)
            for protocol, binding in value.items():
                if element and not str(protocol).startswith("x-"):
                    yield here, element, str(protocol), binding
        else:
            yield from _bindings(value, here)


def _element(where: str) -> str | None:
    """Which element the bindings at ``where`` belong to, from the document's shape."""
    parts = where.split("/")
    if "messages" in parts or "message" in parts:
        return "message"
    if len(parts) == 2 and parts[0] in _ELEMENTS:
        return _ELEMENTS[parts[0]]
    if len(parts) == 3 and parts[0] == "channels" and parts[2] in ("publish", "subscribe"):
        return "operation"  # AsyncAPI 2.6.0
    return None


def _closest(error: Any) -> Any:
    """A sub-error of a ``oneOf`` says more than "not valid under any of the given
    schemas": follow the one that got furthest into the document (and not the "is it a
    $ref?" branch)."""
    while error.context:
        error = max(
            error.context,
            key=lambda e: (len(e.absolute_path), e.validator != "required"),
        )
    return error


def unresolved_refs(document: Mapping[str, Any]) -> list[str]:
    """The local ``$ref`` (``#/...``) of ``document`` that point at nothing."""
    return [
        f"{where}: $ref {ref!r} points at nothing"
        for where, ref in _refs(document, "")
        if ref.startswith("#") and not _resolves(document, ref)
    ]


def _refs(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield where or "(document)", ref
        for key, value in node.items():
            yield from _refs(value, f"{where}/{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{where}/{i}")


def _resolves(document: Mapping[str, Any], ref: str) -> bool:
    node: Any = document
    pointer = ref[1:]
    if not pointer:
        return True
    if not pointer.startswith("/"):
        return False
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def specs_dir(start: Path | None = None) -> Path:
    """Where the official schemas are; raises ``FileNotFoundError`` saying how to get them."""
    configured = os.environ.get(SPECS_ENV)
    if configured:
        return Path(configured)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / _NPM_PATH).is_dir():
            return folder / _NPM_PATH
    raise FileNotFoundError(
        "the official AsyncAPI schemas come from the npm package @asyncapi/specs: run "
        f"`npm install @asyncapi/specs` here, or set {SPECS_ENV} to its schemas folder"
    )


def _jsonschema() -> Any:
    try:
        return importlib.import_module("jsonschema")
    except ModuleNotFoundError as exc:
        raise ImportError(
            'validating AsyncAPI documents needs jsonschema: pip install "fastapi-stream[cli]"'
        ) from exc


@functools.cache
def _validator(version: str) -> Any:
    schema = json.loads((specs_dir() / f"{version}.json").read_text(encoding="utf-8"))
    return _jsonschema().Draft7Validator(schema)


@functools.cache
def _binding_validator(protocol: str, version: str, element: str) -> Any:
    """A validator of one binding schema; what it refers to (``definitions/3.0.0/...``,
    other bindings) is looked up in the package by ``$id``."""
    jsonschema = _jsonschema()
    referencing = importlib.import_module("referencing")
    importlib.import_module("referencing.jsonschema")
    root = specs_dir().parent
    resources = []
    for folder in (root / "definitions", root / "bindings"):
        for path in folder.rglob("*.json"):
            contents = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(contents, dict) and "$id" in contents:
                resource = referencing.Resource.from_contents(
                    contents, default_specification=referencing.jsonschema.DRAFT7
                )
                resources.append((contents["$id"], resource))
    registry = referencing.Registry().with_resources(resources)
    schema = binding_schema(protocol, version, element)
    return jsonschema.Draft7Validator(schema, registry=registry)
