"""Encoding of outgoing values and decoding of incoming bodies by content type."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import BaseModel

__all__ = ["JSON", "OCTET_STREAM", "TEXT", "Decoder", "Encoder", "decode", "encode"]

JSON = "application/json"
TEXT = "text/plain"
OCTET_STREAM = "application/octet-stream"

#: ``decoder(body, content_type)`` turns raw bytes into a Python value that is then validated.
Decoder = Callable[[bytes, "str | None"], Any]
#: ``encoder(value)`` turns a handler's result (or a published value) into bytes and a
#: content type.
Encoder = Callable[[Any], "tuple[bytes, str | None]"]


def encode(value: Any) -> tuple[bytes, str | None]:
    """Encode ``value`` for the wire: models and containers as JSON, ``str`` as UTF-8 text,
    ``bytes`` as they are, ``None`` as an empty body (a Kafka tombstone, say)."""
    if isinstance(value, BaseModel):
        return value.__pydantic_serializer__.to_json(value), JSON
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), OCTET_STREAM
    if isinstance(value, str):
        return value.encode(), TEXT
    if value is None:
        return b"", None
    return pydantic_core.to_json(value), JSON


@functools.lru_cache(maxsize=256)
def media_type(content_type: str | None) -> str | None:
    """``"application/json; charset=utf-8"`` -> ``"application/json"``."""
    if content_type is None:
        return None
    return content_type.partition(";")[0].strip().lower() or None


def decode(body: bytes, content_type: str | None) -> Any:
    """Decode ``body`` by its content type.

    JSON types parse as JSON, ``text/*`` becomes ``str``, anything else stays ``bytes``.
    Without a content type the body is JSON if it parses, else text if it is UTF-8, else
    bytes, so plain producers that set no metadata still work.
    """
    kind = media_type(content_type)
    if kind is None:
        if not body:
            return None
        try:
            return pydantic_core.from_json(body)
        except ValueError:
            pass
        try:
            return body.decode()
        except UnicodeDecodeError:
            return body
    if kind == JSON or kind.endswith("+json"):
        return pydantic_core.from_json(body) if body else None
    if kind.startswith("text/"):
        return body.decode()
    return body
