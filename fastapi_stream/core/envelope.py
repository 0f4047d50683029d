"""The envelope for brokers whose messages are bare bytes (Redis lists and pub/sub).

Such a message carries the metadata of an :class:`OutgoingMessage` (ids, ``reply_to``,
content type, headers) in front of its body, in a format another producer can write::

    fstream:1\\n{"message_id":"...","content_type":"application/json","headers":{...}}\\n<body>

A value that does not start with the envelope line (another producer's plain JSON, say)
is all body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi_stream.core.message import OutgoingMessage, StreamMessage

__all__ = ["ENVELOPE_PREFIX", "META_KEYS", "message_from", "pack", "unpack"]

ENVELOPE_PREFIX = b"fstream:1\n"
#: The metadata fields an envelope (or a Redis stream entry) carries besides headers.
META_KEYS = ("message_id", "correlation_id", "reply_to", "content_type")


def pack(message: OutgoingMessage) -> bytes:
    """``message`` in its envelope: the envelope line, its metadata as JSON, the body."""
    meta: dict[str, Any] = {}
    for key in META_KEYS:
        value = getattr(message, key)
        if value:
            meta[key] = value
    if message.headers:
        meta["headers"] = message.headers
    return ENVELOPE_PREFIX + json.dumps(meta, separators=(",", ":")).encode() + b"\n" + message.body


def unpack(raw: bytes) -> tuple[bytes, dict[str, Any]]:
    """``(body, metadata)`` of an enveloped value; a value without the envelope is all
    body, with no metadata."""
    if raw.startswith(ENVELOPE_PREFIX):
        end = raw.find(b"\n", len(ENVELOPE_PREFIX))
        if end != -1:
            try:
                meta = json.loads(raw[len(ENVELOPE_PREFIX) : end])
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                return raw[end + 1 :], meta
    return raw, {}


def message_from(
    body: bytes,
    meta: Mapping[str, Any],
    channel: str,
    raw: Any,
    *,
    message_id: str | None = None,
    attempt: int | None = None,
) -> StreamMessage:
    """The :class:`StreamMessage` for a body and its metadata; ``message_id`` is used
    when the metadata has none (a Redis stream entry's id, say)."""
    headers = meta.get("headers")
    return StreamMessage(
        body,
        channel=channel,
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        message_id=_text(meta.get("message_id")) or message_id,
        correlation_id=_text(meta.get("correlation_id")),
        reply_to=_text(meta.get("reply_to")),
        content_type=_text(meta.get("content_type")),
        delivery_attempt=attempt,
        raw_message=raw,
    )


def _text(value: Any) -> str | None:
    return str(value) if value else None
