"""Result publishes sent together: one round trip per delivery instead of one per message.

A subscriber publishes what a handler returns (to its ``@publisher`` channels and to
``reply_to``) before it acks the message it answers. It marks those publishes with
:func:`begin` / :func:`end`, naming the delivery the message came in (the consume loop's
:class:`~fastapi_stream.core.message.Settler`); at the end of the publish middlewares the
broker offers each one to :func:`defer`, and the delivery keeps it. After the delivery
the consume loop sends what it kept with ``Transport.publish_many`` and only then the
delivery's settlements; if they cannot be sent, those messages are delivered again:
results may be published twice, never lost.

Only results wait: a publish the handler awaits itself goes out before the ``await``
returns, since the handler may depend on it (wait for a reply, tell an HTTP client).
A result published through another broker goes out at once (the delivery is not its).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from fastapi_stream.core.message import Settler

__all__ = ["begin", "defer", "end"]

#: The delivery whose handler's result is being published, if one is.
_delivery: ContextVar[Settler | None] = ContextVar("fastapi_stream_result_of", default=None)


def begin(delivery: Settler | None) -> Token[Settler | None]:
    """Publishes from now on are results of ``delivery``; hand the token to :func:`end`
    (a plain call pair, not a context manager: this runs for every result)."""
    return _delivery.set(delivery)


def end(token: Token[Settler | None]) -> None:
    _delivery.reset(token)


def defer(owner: object, item: Any) -> bool:
    """Leave ``item`` (what the broker ``owner`` needs to send it later) to the delivery
    whose result it is, if it is one and ``owner`` consumes that delivery."""
    delivery = _delivery.get()
    return delivery is not None and delivery.keep_result(owner, item)
