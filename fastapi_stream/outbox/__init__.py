"""Transactional outbox and idempotent inbox on the application's own database
(extra ``outbox``: SQLAlchemy 2 asyncio, with asyncpg or aiosqlite).

* :class:`Outbox`: ``await outbox.publish(session, message, "orders")`` writes the message
  in the caller's transaction; the relay, run by the router's broker, publishes what was
  committed, in order per channel, with the original message id.
* :class:`Inbox`: a subscriber middleware that records each processed message id in the
  handler's own transaction, so a redelivered message has its effect once.

See ``docs/outbox.md``.
"""

try:
    import sqlalchemy.ext.asyncio  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fastapi_stream.outbox needs SQLAlchemy 2 with asyncio: "
        'pip install "fastapi-stream[outbox]"'
    ) from exc

from fastapi_stream.outbox.inbox import Inbox
from fastapi_stream.outbox.metrics import OutboxMetrics, PrometheusOutboxMetrics
from fastapi_stream.outbox.outbox import Outbox, OutboxPublisher
from fastapi_stream.outbox.relay import Relay
from fastapi_stream.outbox.tables import (
    DEFAULT_INBOX_TABLE,
    DEFAULT_OUTBOX_TABLE,
    ddl,
    inbox_table,
    outbox_table,
    upgrade_ddl,
)

__all__ = [
    "DEFAULT_INBOX_TABLE",
    "DEFAULT_OUTBOX_TABLE",
    "Inbox",
    "Outbox",
    "OutboxMetrics",
    "OutboxPublisher",
    "PrometheusOutboxMetrics",
    "Relay",
    "ddl",
    "inbox_table",
    "outbox_table",
    "upgrade_ddl",
]
