"""Result publishes sent together: one round trip per delivery instead of one per message.

A subscriber publishes what a handler returns (to its ``@publisher`` channels and to
``reply_to``) before it acks the message it answers. The consume loop (``core/consume.py``)
opens an outbox with :func:`open_outbox` around each delivery, owned by the broker; the
subscriber marks result publishes with :func:`begin_result` / :func:`end_result`; the
broker hands such a publish to :func:`defer`, which keeps it in the outbox. After the
delivery the loop sends the outbox with ``Transport.publish_many`` and only then the
delivery's settlements; if the outbox cannot be sent, those messages are delivered again:
results may be published twice, never lost.

Only results wait: a publish the handler awaits itself goes out before the ``await``
returns, since the handler may depend on it (wait for a reply, tell an HTTP client).
A result published through another broker goes out at once (the open outbox is not its).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

__all__ = ["begin_result", "close_outbox", "defer", "end_result", "open_outbox"]

#: The open outbox: the transport that opened it, and its deferred publishes.
_outbox: ContextVar[tuple[object, list[Any]] | None] = ContextVar(
    "fastapi_stream_outbox", default=None
)
_result: ContextVar[bool] = ContextVar("fastapi_stream_result", default=False)


def open_outbox(owner: object) -> tuple[Token[Any], list[Any]]:
    """Open ``owner``'s outbox (``owner`` is the broker) for the delivery handled until
    :func:`close_outbox`; returns the token to close it with and the list that collects
    the deferred publishes, in the order they were made. (A plain call pair, not a
    context manager: this runs for every delivery.)"""
    outbox: list[Any] = []
    return _outbox.set((owner, outbox)), outbox


def close_outbox(token: Token[Any]) -> None:
    _outbox.reset(token)


def begin_result() -> Token[bool]:
    """Mark the publishes made from now on as a handler's result; hand the token to
    :func:`end_result` (a plain call pair: this runs for every message)."""
    return _result.set(True)


def end_result(token: Token[bool]) -> None:
    _result.reset(token)


def defer(owner: object, item: Any) -> bool:
    """Keep ``item`` (whatever ``owner`` needs to send it later) in the open outbox if this
    is a result publish inside a delivery whose outbox ``owner`` opened."""
    if not _result.get():
        return False
    found = _outbox.get()
    if found is None or found[0] is not owner:
        return False
    found[1].append(item)
    return True
