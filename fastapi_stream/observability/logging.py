"""Per-message logging context.

While a message is handled, every record logged through the broker's logger (the one
handlers receive as ``Logger``) carries ``channel``, ``subscriber`` and ``message_id``
attributes, plus ``stream_context``, all three in one string for format strings::

    logging.basicConfig(format="%(levelname)s %(stream_context)s %(message)s")

Add :class:`MessageContextFilter` to a handler to give records of every logger the same
attributes (records logged outside a message get empty values).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from fastapi_stream.core.message import StreamMessage

__all__ = ["MessageContext", "MessageContextFilter", "current_message_context"]


class MessageContext(NamedTuple):
    channel: str
    subscriber: str
    message_id: str | None


#: (subscriber name, message) of the message being handled; a plain tuple because it is
#: set for every message.
_Current = tuple[str, "StreamMessage"]
_current: ContextVar[_Current | None] = ContextVar("fastapi_stream_message", default=None)


def current_message_context() -> MessageContext | None:
    """The message being handled in this task, if any."""
    current = _current.get()
    if current is None:
        return None
    subscriber, message = current
    return MessageContext(message.channel, subscriber, message.message_id)


def enter_message(subscriber: str, message: StreamMessage) -> Token[_Current | None]:
    return _current.set((subscriber, message))


def leave_message(token: Token[_Current | None]) -> None:
    _current.reset(token)


class MessageContextFilter(logging.Filter):
    """Adds the current message's context to log records (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_message_context()
        if context is None:
            values = {"channel": "", "subscriber": "", "message_id": "", "stream_context": "-"}
        else:
            message_id = context.message_id or ""
            values = {
                "channel": context.channel,
                "subscriber": context.subscriber,
                "message_id": message_id,
                "stream_context": f"{context.channel} {context.subscriber} {message_id}",
            }
        record.__dict__.update(values)
        return True


def install_filter(logger: logging.Logger) -> None:
    """Attach the filter to ``logger`` once."""
    if not any(isinstance(f, MessageContextFilter) for f in logger.filters):
        logger.addFilter(MessageContextFilter())
