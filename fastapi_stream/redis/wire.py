"""How a message is written to a Redis stream entry, and read back from one.

List items and pub/sub payloads carry ``core/envelope.py``'s envelope; a stream entry
carries the same metadata as fields next to its ``body`` (see docs/redis.md).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from fastapi_stream.core import envelope
from fastapi_stream.core.codec import JSON
from fastapi_stream.core.message import OutgoingMessage, StreamMessage

__all__ = ["entry_message", "stream_fields"]


def stream_fields(message: OutgoingMessage) -> dict[Any, Any]:
    """The fields of the stream entry that carries ``message``."""
    fields: dict[Any, Any] = {"body": message.body}
    for key in envelope.META_KEYS:
        value = getattr(message, key)
        if value:
            fields[key] = value
    if message.headers:
        fields["headers"] = json.dumps(message.headers, separators=(",", ":"))
    return fields


def _decode_fields(fields: Mapping[bytes, bytes]) -> tuple[bytes, dict[str, Any]]:
    """``(body, metadata)`` of a stream entry. An entry without a ``body`` field (another
    producer's) becomes a JSON object of its fields."""
    if b"body" not in fields:
        plain = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        return json.dumps(plain).encode(), {"content_type": JSON}
    meta: dict[str, Any] = {}
    for key in envelope.META_KEYS:
        value = fields.get(key.encode())
        if value:
            meta[key] = value.decode(errors="replace")
    headers = fields.get(b"headers")
    if headers:
        with contextlib.suppress(ValueError):
            meta["headers"] = json.loads(headers)
    return fields[b"body"], meta


def entry_message(
    stream: str, entry_id: bytes, fields: Mapping[bytes, bytes], attempt: int | None
) -> StreamMessage:
    """The message stream entry ``entry_id`` carries; its id is the entry's unless the
    producer gave one."""
    body, meta = _decode_fields(fields)
    raw = (entry_id, fields)
    return envelope.message_from(
        body, meta, stream, raw, message_id=entry_id.decode(), attempt=attempt
    )
