"""Kafka records and messages, both ways: the envelope headers that carry a message's
metadata (named as FastStream names them, so both libraries read each other's records),
and bounded housekeeping on aiokafka's clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, cast

from aiokafka import ConsumerRecord

from fastapi_stream.core.errors import reason
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.kafka.offsets import HOUSEKEEPING_TIMEOUT, PartitionLedger

__all__ = [
    "KafkaMessage",
    "message_key",
    "incoming",
    "outgoing_headers",
    "quietly",
    "stop_client",
]

logger = logging.getLogger("fastapi_stream.kafka")

CONTENT_TYPE = "content-type"
CORRELATION_ID = "correlation_id"
REPLY_TO = "reply_to"
MESSAGE_ID = "message_id"
ENVELOPE = frozenset({CONTENT_TYPE, CORRELATION_ID, REPLY_TO, MESSAGE_ID})


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value is not None else ""


def split_headers(
    raw: Iterable[tuple[str, bytes]] | None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(user headers, envelope headers) of a record; a repeated key keeps its last value."""
    headers: dict[str, str] = {}
    envelope: dict[str, str] = {}
    for key, value in raw or ():
        (envelope if key in ENVELOPE else headers)[key] = _text(value)
    return headers, envelope


def incoming(record: ConsumerRecord, cls: type[StreamMessage] = StreamMessage) -> Any:
    """A ``cls`` built from the record: its value (a null one, a tombstone, is an empty
    body), its headers, and the metadata the envelope headers carry."""
    headers, envelope = split_headers(record.headers)
    value = record.value
    message = cls.__new__(cls)
    StreamMessage.__init__(
        message,
        value if value is not None else b"",
        channel=record.topic,
        headers=headers,
        # Stable across redeliveries: the retry budget counts by it.
        message_id=envelope.get(MESSAGE_ID) or f"{record.topic}-{record.partition}-{record.offset}",
        correlation_id=envelope.get(CORRELATION_ID),
        reply_to=envelope.get(REPLY_TO),
        content_type=envelope.get(CONTENT_TYPE),
        raw_message=record,
    )
    return message


def outgoing_headers(message: OutgoingMessage) -> list[tuple[str, bytes]]:
    headers = [(key, value.encode()) for key, value in message.headers.items()]
    if message.content_type:
        headers.append((CONTENT_TYPE, message.content_type.encode()))
    if message.message_id:
        headers.append((MESSAGE_ID, message.message_id.encode()))
    if message.correlation_id:
        headers.append((CORRELATION_ID, message.correlation_id.encode()))
    if message.reply_to:
        headers.append((REPLY_TO, message.reply_to.encode()))
    return headers


def _failed(exc: BaseException) -> bool:
    """Whether ``exc``, raised by aiokafka on the way out, is a failure to log rather than
    a cancellation to pass on. aiokafka's ``stop()`` awaits tasks it has just cancelled
    (its fetcher's pending fetches: aio-libs/aiokafka#647), so a ``CancelledError`` can
    come out of it while nobody cancelled the task that called it."""
    if not isinstance(exc, asyncio.CancelledError):
        return isinstance(exc, Exception)
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


async def quietly(awaitable: Any) -> bool:
    """Housekeeping on the way out: bounded, and never raising. Whether it completed."""
    try:
        async with asyncio.timeout(HOUSEKEEPING_TIMEOUT):
            await awaitable
    except BaseException as exc:
        if not _failed(exc):
            raise
        logger.debug("kafka housekeeping failed: %s", reason(exc))
        return False
    return True


async def stop_client(client: Any) -> None:
    """Stop an aiokafka producer or consumer within the housekeeping bound. One that
    hangs or fails half-way (a broker gone, a group that cannot be left) has its
    connections closed anyway, so no socket outlives the app."""
    if await quietly(client.stop()):
        return
    connections = getattr(client, "_client", None) or getattr(client, "client", None)
    if connections is not None:
        await quietly(connections.close())


class KafkaMessage(StreamMessage):
    """A record from Kafka; ``raw_message`` is aiokafka's ``ConsumerRecord``. Kafka keeps
    no delivery count, so ``delivery_attempt`` is ``None`` and retries are counted
    in-process by ``message_id``."""

    __slots__ = ("_ledger",)
    _ledger: PartitionLedger  # where the subscription settles it

    @property
    def key(self) -> bytes | None:
        return cast(bytes | None, self.raw_message.key)

    @property
    def partition(self) -> int:
        return cast(int, self.raw_message.partition)

    @property
    def offset(self) -> int:
        return cast(int, self.raw_message.offset)

    @property
    def timestamp_ms(self) -> int:
        return cast(int, self.raw_message.timestamp)


def message_key(message: StreamMessage) -> bytes | None:
    """The Kafka key of ``message``, from a real broker or from the test broker (where
    it is the ``key=`` the message was published with)."""
    if isinstance(message, KafkaMessage):
        return message.key
    key = getattr(message.raw_message, "options", {}).get("key")
    return key.encode() if isinstance(key, str) else cast(bytes | None, key)
