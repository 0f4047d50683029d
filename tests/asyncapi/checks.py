"""Shared assertions: a document is valid AsyncAPI, checked against the official JSON
Schema of its version (``@asyncapi/specs``, installed by npm in ``make install``) and for dangling
``$ref``."""

from __future__ import annotations

from typing import Any

from fastapi_stream.asyncapi import validate


def assert_valid(document: dict[str, Any]) -> dict[str, Any]:
    problems = validate(document)
    assert problems == [], "\n".join(problems)
    return document
