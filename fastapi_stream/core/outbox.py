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
from typing import Any, Protocol

__all__ = ["Outbox", "begin_result", "close_outbox", "defer", "end_result", "open_outbox"]


#: The open outbox: the transport that opened it, and its deferred publishes.
class Outbox(Protocol):
    """What collects one delivery's result publishes: the consume loop's job for it.
    ``results`` stays ``None`` until the first one (nothing is allocated per delivery
    that publishes no result)."""

    results: list[Any] | None

    @property
    def owner(self) -> object:
        """Whose result publishes it collects (the broker)."""


_outbox: ContextVar[Outbox | None] = ContextVar("fastapi_stream_outbox", default=None)
_result: ContextVar[bool] = ContextVar("fastapi_stream_result", default=False)


def open_outbox(outbox: Outbox) -> Token[Outbox | None]:
    """Collect result publishes made for ``outbox.owner`` (the broker) into ``outbox``
    until :func:`close_outbox`. (A plain call pair, not a context manager: this runs for
    every delivery.)"""
    return _outbox.set(outbox)


def close_outbox(token: Token[Outbox | None]) -> None:
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
    if found is None or found.owner is not owner:
        return False
    if found.results is None:
        found.results = [item]
    else:
        found.results.append(item)
    return True
