"""The outbox and inbox tables, as SQLAlchemy Core tables, and their DDL.

One row of the outbox is one message exactly as the broker will receive it: the encoded
body, headers, content type, message id and broker options were fixed when the row was
written, so the relay only copies them to the broker. Times are seconds since the epoch
(double precision), the same on every database.

:func:`ddl` prints the ``CREATE TABLE``/``CREATE INDEX`` statements for a dialect, for a
migration tool of the application's own::

    python -c "from fastapi_stream.outbox import ddl; print(ddl('postgresql'))"

Schema versions: version 1 (the first release) had no ``attempts``, ``last_error`` and
``failed_at``; :func:`upgrade_ddl` prints the statements that bring a version 1 table to
the current one (the relay runs them itself at startup unless ``create_table=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

__all__ = [
    "DEFAULT_INBOX_TABLE",
    "DEFAULT_OUTBOX_TABLE",
    "UPGRADE_COLUMNS",
    "ddl",
    "inbox_table",
    "outbox_table",
    "upgrade_ddl",
]

DEFAULT_OUTBOX_TABLE = "fastapi_stream_outbox"
DEFAULT_INBOX_TABLE = "fastapi_stream_inbox"

# SQLite gives a primary key autoincrement only to INTEGER (BIGINT would stay NULL).
_ID = BigInteger().with_variant(Integer(), "sqlite")
_TIME = Float(precision=53).with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
# MySQL needs a length on indexed text columns.
_NAME = String(255)


def outbox_table(name: str = DEFAULT_OUTBOX_TABLE, metadata: MetaData | None = None) -> Table:
    """The outbox table called ``name`` (in ``metadata``, or in a metadata of its own)."""
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("message_id", _NAME, nullable=False),
        Column("channel", _NAME, nullable=False),
        #: Rows of one partition are sent in ``id`` order: the channel, or the channel
        #: and the key when the outbox orders per key.
        Column("partition", String(512), nullable=False),
        Column("message_key", _NAME, nullable=True),
        Column("body", LargeBinary().with_variant(mysql.LONGBLOB(), "mysql"), nullable=False),
        Column("headers", JSON(), nullable=True),
        Column("content_type", _NAME, nullable=True),
        Column("correlation_id", _NAME, nullable=True),
        Column("reply_to", _NAME, nullable=True),
        Column("options", JSON(), nullable=True),
        Column("created_at", _TIME, nullable=False),
        Column("sent_at", _TIME, nullable=True),
        #: Times the broker refused the row while it answered (an outage counts nothing).
        Column("attempts", Integer(), nullable=False, server_default=text("0")),
        #: Why the broker last refused it (never the payload).
        Column("last_error", Text(), nullable=True),
        #: Set aside after ``max_attempts`` refusals: the relay skips it until retried.
        Column("failed_at", _TIME, nullable=True),
        # The relay finds unsent rows through this index; sent ones are pruned by time.
        Index(f"ix_{name}_unsent", "sent_at", "id"),
        Index(f"ix_{name}_failed", "failed_at"),
    )


#: The columns (and index) that version 2 added to a version 1 outbox table.
UPGRADE_COLUMNS = ("attempts", "last_error", "failed_at")


def inbox_table(name: str = DEFAULT_INBOX_TABLE, metadata: MetaData | None = None) -> Table:
    """The inbox table called ``name``: one row per (consumer, message id) processed."""
    return Table(
        name,
        metadata if metadata is not None else MetaData(),
        Column("consumer", _NAME, primary_key=True),
        Column("message_id", _NAME, primary_key=True),
        Column("processed_at", _TIME, nullable=False),
        Index(f"ix_{name}_processed_at", "processed_at"),
    )


_DIALECTS: dict[str, Dialect] = {
    "postgresql": postgresql.dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite.dialect(),
    "mysql": mysql.dialect(),
}


def ddl(
    dialect: str = "postgresql",
    *,
    outbox: str = DEFAULT_OUTBOX_TABLE,
    inbox: str | None = DEFAULT_INBOX_TABLE,
) -> str:
    """The statements that create the outbox (and the inbox, unless ``inbox=None``) on
    ``dialect`` (``"postgresql"``, ``"sqlite"`` or ``"mysql"``), each ending in ``;``."""
    target = _DIALECTS[dialect]
    tables = [outbox_table(outbox)] + ([inbox_table(inbox)] if inbox else [])
    statements: list[str] = []
    for table in tables:
        statements.append(str(CreateTable(table).compile(dialect=target)).strip())
        statements.extend(
            str(CreateIndex(index).compile(dialect=target)).strip()
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        )
    return "\n\n".join(f"{statement};" for statement in statements) + "\n"


def upgrade_statements(table: Table, dialect: Dialect, missing: Sequence[str]) -> list[str]:
    """``ALTER TABLE ... ADD ...`` for each column of ``missing`` (of
    :data:`UPGRADE_COLUMNS`), and the index on ``failed_at`` when that column is new."""
    quoted = dialect.identifier_preparer.format_table(table)
    statements = []
    for name in missing:
        column = table.c[name]
        spec = column.type.compile(dialect=dialect)
        if name == "attempts":
            spec += " NOT NULL DEFAULT 0"
        statements.append(
            f"ALTER TABLE {quoted} ADD {dialect.identifier_preparer.quote(name)} {spec}"
        )
    if "failed_at" in missing:
        index = next(ix for ix in table.indexes if ix.name == f"ix_{table.name}_failed")
        statements.append(str(CreateIndex(index).compile(dialect=dialect)).strip())
    return statements


def upgrade_ddl(dialect: str = "postgresql", *, outbox: str = DEFAULT_OUTBOX_TABLE) -> str:
    """The statements that bring a version 1 outbox table (the first release's, without
    ``attempts``, ``last_error`` and ``failed_at``) to the current schema, for a migration
    of the application's own; each ends in ``;``."""
    statements = upgrade_statements(outbox_table(outbox), _DIALECTS[dialect], UPGRADE_COLUMNS)
    return "\n\n".join(f"{statement};" for statement in statements) + "\n"
