"""examples/outbox: the orders service on SQLite, and on the real PostgreSQL and MariaDB
(a database of the test's own each), with the memory broker; the module is loaded anew
for each database (its objects are made at import, from DATABASE_URL and BROKER_URL).
Also: what docs/outbox.md shows (the DDL, the upgrade statements, the testing snippet)."""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from fastapi_stream.outbox import ddl, upgrade_ddl
from fastapi_stream.testing import TestStreamBroker
from tests.outbox.conftest import db_url, mariadb_url, pg_url, sqlite_url  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "outbox" / "app.py"
DOCS = ROOT / "docs" / "outbox.md"


@pytest.fixture
def service(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:  # noqa: F811
    """examples/outbox/app.py loaded on ``db_url`` and a memory broker of its own."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("BROKER_URL", f"memory://{uuid.uuid4().hex}")
    name = f"outbox_example_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the models' annotations there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def invoices_of(client: TestClient, count: int) -> list[dict[str, object]]:
    """The invoices once there are ``count`` of them (bounded wait: billing is async)."""
    deadline = time.monotonic() + 10
    while True:
        found = client.get("/invoices").json()
        if len(found) >= count or time.monotonic() > deadline:
            return list(found)
        time.sleep(0.02)


def test_an_order_and_its_event_go_together(service: ModuleType) -> None:
    with TestClient(service.app) as client:
        created = client.post("/orders", json={"id": 1, "amount": 9.5})
        assert created.status_code == 201
        assert created.json()["event"]
        # The same order again: the insert fails, so no second event exists either.
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            client.post("/orders", json={"id": 1, "amount": 1.0})
        assert invoices_of(client, 1) == [{"order_id": 1, "amount": 9.5}]
        assert client.get("/health/ready").status_code == 200


def test_a_redelivered_event_bills_once(service: ModuleType) -> None:
    event = service.OrderCreated(order_id=7, amount=1.5)
    publish = functools.partial(service.router.broker.publish, message_id="evt-7")
    with TestClient(service.app) as client:
        assert client.portal is not None
        for _ in range(3):  # one event delivered three times
            client.portal.call(publish, event, "order-created")
        assert invoices_of(client, 1) == [{"order_id": 7, "amount": 1.5}]
        time.sleep(0.2)  # the other two deliveries are acked, not billed
        assert invoices_of(client, 1) == [{"order_id": 7, "amount": 1.5}]


# --8<-- [start:testing]
def test_an_order_publishes_its_event(service: ModuleType) -> None:
    """``service`` is examples/outbox/app.py, loaded on a database of this test's own."""
    with TestStreamBroker(service.router), TestClient(service.app) as client:
        response = client.post("/orders", json={"id": 3, "amount": 20.0})
        assert response.status_code == 201

        # Recorded when the transaction committed, before the relay sent the event:
        service.order_created.mock.assert_called_once_with({"order_id": 3, "amount": 20.0})
        # The relay runs under the test broker too: billing gets the event.
        assert client.portal is not None
        client.portal.call(service.bill.wait_call)
        service.bill.mock.assert_called_once_with({"order_id": 3, "amount": 20.0})


# --8<-- [end:testing]


def test_the_documented_ddl_is_what_ddl_prints() -> None:
    docs = DOCS.read_text()
    blocks = re.findall(r"```sql\n(.*?)```", docs, re.DOTALL)

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    assert lines(blocks[0]) == lines(ddl("postgresql")), "docs/outbox.md: the DDL is stale"
    assert lines(blocks[1]) == lines(upgrade_ddl("postgresql")), "the upgrade is stale"
    for dialect in ("postgresql", "sqlite", "mysql"):
        assert "CREATE TABLE fastapi_stream_outbox" in ddl(dialect)
        assert "ADD attempts INTEGER NOT NULL DEFAULT 0" in upgrade_ddl(dialect)
