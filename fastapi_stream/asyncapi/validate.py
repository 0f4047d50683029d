"""Checking a document: against the official AsyncAPI JSON Schema of its version, and that
every local ``$ref`` points at something.

The official schemas come from the npm package ``@asyncapi/specs`` (``npm install
@asyncapi/specs``; ``make install`` does it for this repository): they are looked up in
``$FASTAPI_STREAM_ASYNCAPI_SPECS``, then in ``node_modules/@asyncapi/specs/schemas`` of the
working directory or any directory above it. Validation needs ``jsonschema``, which the
``cli`` extra installs; the schema alone does not look inside ``$ref`` strings, hence the
second check.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SPEC_VERSIONS", "unresolved_refs", "validate"]

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
    return problems


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


@functools.cache
def _validator(version: str) -> Any:
    try:
        jsonschema = importlib.import_module("jsonschema")
    except ModuleNotFoundError as exc:
        raise ImportError(
            'validating AsyncAPI documents needs jsonschema: pip install "fastapi-stream[cli]"'
        ) from exc
    schema = json.loads((specs_dir() / f"{version}.json").read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)
