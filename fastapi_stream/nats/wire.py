"""What crosses the wire to NATS: subject rules, the header envelope, the messages made of
what arrives (:class:`NatsMessage` for JetStream, :func:`kv_message` for a key-value
watch) and the one mapping of nats-py's errors to fastapi_stream's.

NATS has no fields for message and correlation ids, a reply address (JetStream uses the
reply subject for acks) or a content type, so they travel in the headers ``message_id``,
``correlation_id``, ``reply_to`` and ``content-type`` (FastStream's names). A message
without them is accepted as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from nats import errors as nats_errors
from nats.aio.msg import Msg
from nats.js.errors import NoStreamResponseError
from nats.js.kv import KeyValue

from fastapi_stream.core.errors import (
    BrokerNotConnected,
    PublishError,
    StreamError,
    TransportError,
    client_error,
)
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.transport import Routing, SubscriptionSpec
from fastapi_stream.nats.options import JStream

__all__ = ["NatsMessage", "NatsRouting", "subject_matches"]

MESSAGE_ID = "message_id"
CORRELATION_ID = "correlation_id"
REPLY_TO = "reply_to"
CONTENT_TYPE = "content-type"
#: JetStream's de-duplication id: a publish retried with the same id is stored once.
NATS_MSG_ID = "Nats-Msg-Id"
_ENVELOPE = frozenset({MESSAGE_ID, CORRELATION_ID, REPLY_TO, CONTENT_TYPE, NATS_MSG_ID})
_PUB_ACK_KEYS = frozenset({"stream", "seq", "duplicate", "domain"})


# -- subjects ----------------------------------------------------------------------------


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    tokens = subject.split(".")
    parts = pattern.split(".")
    for i, part in enumerate(parts):
        if part == ">":
            return len(tokens) > i
        if i >= len(tokens) or (part != "*" and part != tokens[i]):
            return False
    return len(parts) == len(tokens)


def wire_subject(spec: SubscriptionSpec) -> str:
    """The subject to subscribe to: every ``{param}`` becomes ``*``."""
    return spec.channel.with_wildcards("*")


def stream_name(stream: object) -> str | None:
    return (
        stream.name if isinstance(stream, JStream) else stream if isinstance(stream, str) else None
    )


class NatsRouting(Routing):
    """NATS rules for the test broker: ``*``/``>`` wildcards, and subscribers of one
    JetStream durable consumer competing for its messages."""

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        durable = spec.options.get("durable")
        if durable:
            return f"{stream_name(spec.options.get('stream'))}#{durable}"
        return super().group_key(spec)

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        return subject_matches(wire_subject(spec), message.channel)


# -- headers -----------------------------------------------------------------------------


def outgoing_headers(message: OutgoingMessage, *, jetstream: bool) -> dict[str, str]:
    """The user's headers and the envelope; through JetStream also ``Nats-Msg-Id``, which
    names the subject too: a dead letter keeps its message id, and may go to a subject of
    the same stream."""
    headers = dict(message.headers)
    headers[MESSAGE_ID] = message.message_id
    if message.correlation_id:
        headers[CORRELATION_ID] = message.correlation_id
    if message.reply_to:
        headers[REPLY_TO] = message.reply_to
    if message.content_type:
        headers[CONTENT_TYPE] = message.content_type
    if jetstream:
        headers.setdefault(NATS_MSG_ID, f"{message.channel}:{message.message_id}")
    return headers


def split_headers(raw: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """(user headers, envelope headers)."""
    if not raw:
        return {}, {}
    headers: dict[str, str] = {}
    envelope: dict[str, str] = {}
    for key, value in raw.items():
        if key in _ENVELOPE:
            envelope[key] = value
        elif not key.startswith("Nats-Expected-"):  # a publish-time check, not data
            headers[key] = value
    return headers, envelope


def plain_message(msg: Msg, *, reply_to: str | None = None) -> StreamMessage:
    """A core NATS message (or a reply): nothing to settle."""
    headers, envelope = split_headers(msg.headers)
    return StreamMessage(
        msg.data,
        channel=msg.subject,
        headers=headers,
        message_id=envelope.get(MESSAGE_ID),
        correlation_id=envelope.get(CORRELATION_ID),
        reply_to=reply_to or envelope.get(REPLY_TO),
        content_type=envelope.get(CONTENT_TYPE),
        raw_message=msg,
    )


def kv_message(entry: KeyValue.Entry) -> StreamMessage:
    """A key-value change, on channel ``key``; bucket, operation and revision in headers."""
    return StreamMessage(
        entry.value or b"",
        channel=entry.key,
        headers={
            "kv-bucket": entry.bucket,
            "kv-operation": entry.operation or "PUT",
            "kv-revision": str(entry.revision),
        },
        message_id=f"{entry.bucket}.{entry.revision}",
        raw_message=entry,
    )


class NatsMessage(StreamMessage):
    """A JetStream delivery (``raw_message.metadata`` has its sequences). The core
    settles it through its subscription; :meth:`in_progress` holds off redelivery while a
    long handler runs."""

    __slots__ = ()

    def __init__(self, msg: Msg) -> None:
        headers, envelope = split_headers(msg.headers)
        meta = msg.metadata
        super().__init__(
            msg.data,
            channel=msg.subject,
            headers=headers,
            # Stable across redeliveries: the id the producer gave, else the stream position.
            message_id=envelope.get(MESSAGE_ID)
            or envelope.get(NATS_MSG_ID)
            or f"{meta.stream}.{meta.sequence.stream}",
            correlation_id=envelope.get(CORRELATION_ID),
            reply_to=envelope.get(REPLY_TO),
            content_type=envelope.get(CONTENT_TYPE),
            delivery_attempt=meta.num_delivered,
            raw_message=msg,
        )

    async def in_progress(self) -> None:
        """Tell JetStream the message is still being worked on (resets its ack wait)."""
        try:
            await self.raw_message.in_progress()
        except Exception as exc:
            raise nats_error(exc, "marking a message in progress") from None


def is_status(msg: Msg) -> bool:
    """A JetStream heartbeat or flow-control message: no data, a ``Status`` header."""
    headers = msg.headers
    return headers is not None and "Status" in headers and not msg.data


def is_pub_ack(msg: Msg) -> bool:
    """Whether ``msg`` is a stream's ack of a request published to a subject it stores:
    a core request to such a subject gets one before the responder's reply."""
    if msg.headers or not msg.data.startswith(b'{"stream":'):
        return False
    try:
        ack = json.loads(msg.data)
    except ValueError:
        return False
    return isinstance(ack, dict) and "seq" in ack and set(ack) <= _PUB_ACK_KEYS


# -- errors ------------------------------------------------------------------------------


def nats_error(
    exc: BaseException, doing: str, *, channel: str | None = None, timeout: float | None = None
) -> StreamError:
    """The fastapi_stream error for ``exc``, raised by nats-py while ``doing`` something
    (publishing to ``channel`` when given, confirmed within ``timeout`` on JetStream)."""
    if isinstance(exc, StreamError):
        return exc
    if isinstance(exc, nats_errors.ConnectionClosedError | nats_errors.StaleConnectionError):
        return BrokerNotConnected(f"NATS is not connected ({doing})")
    if channel is None:
        return TransportError(f"NATS failed {doing}: {exc or type(exc).__name__}")
    if isinstance(exc, NoStreamResponseError):
        return PublishError(f"no JetStream stream takes subject {channel!r}")
    return client_error(exc, f"the publish to {channel!r}", broker="NATS", timeout=timeout)
