"""examples/outbox: the orders service on SQLite, and on the real PostgreSQL and MariaDB
(a database of the test's own each), with the memory broker."""

from __future__ import annotations

import functools
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from examples.outbox.app import OrderCreated, create_app
from fastapi_stream.outbox import ddl
from tests.outbox.conftest import db_url, mariadb_url, pg_url, sqlite_url  # noqa: F401 (fixtures)


def invoices_of(client: TestClient, count: int) -> list[dict[str, object]]:
    """The invoices once there are ``count`` of them (bounded wait: billing is async)."""
    deadline = time.monotonic() + 10
    while True:
        found = client.get("/invoices").json()
        if len(found) >= count or time.monotonic() > deadline:
            return list(found)
        time.sleep(0.02)


def test_an_order_and_its_event_go_together(db_url: str) -> None:  # noqa: F811
    app = create_app(db_url, f"memory://{uuid.uuid4().hex}")
    with TestClient(app) as client:
        created = client.post("/orders", json={"id": 1, "amount": 9.5})
        assert created.status_code == 201
        assert created.json()["event"]
        # The same order again: the insert fails, so no second event exists either.
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            client.post("/orders", json={"id": 1, "amount": 1.0})
        assert invoices_of(client, 1) == [{"order_id": 1, "amount": 9.5}]
        assert client.get("/health/ready").status_code == 200


def test_a_redelivered_event_bills_once(db_url: str) -> None:  # noqa: F811
    app = create_app(db_url, f"memory://{uuid.uuid4().hex}")
    event = OrderCreated(order_id=7, amount=1.5)
    publish = functools.partial(app.state.broker.publish, message_id="evt-7")
    with TestClient(app) as client:
        assert client.portal is not None
        for _ in range(3):  # one event delivered three times
            client.portal.call(publish, event, "order-created")
        assert invoices_of(client, 1) == [{"order_id": 7, "amount": 1.5}]
        time.sleep(0.2)  # the other two deliveries are acked, not billed
        assert invoices_of(client, 1) == [{"order_id": 7, "amount": 1.5}]


def test_the_documented_ddl_is_valid_sql() -> None:
    for dialect in ("postgresql", "sqlite", "mysql"):
        assert "CREATE TABLE fastapi_stream_outbox" in ddl(dialect)
