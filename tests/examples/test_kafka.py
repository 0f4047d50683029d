"""examples/kafka/app.py: with the test broker, and the same app on a real Kafka-protocol
broker (``TestStreamBroker(..., with_real=True)``)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

# A short session timeout: a Kafka-protocol broker settles a new group member in about
# half of it. Set before the example reads it.
os.environ.setdefault("KAFKA_SESSION_TIMEOUT_MS", "2000")
os.environ.setdefault("KAFKA_SERVERS", "127.0.0.1:9092")

from examples.kafka import app as example
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    def clear() -> None:
        example.invoices.clear()
        example.customers.clear()
        example.page_views.clear()

    clear()
    yield
    clear()


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_with_the_test_broker() -> None:
    with TestStreamBroker(example.router), TestClient(example.app) as client:
        order = {"id": 1, "customer": "ada", "amount": 10.0}
        assert client.post("/orders", json=order).json() == {"queued": 1}
        # The inline test broker ran the handler before publish() returned.
        assert example.invoices == [example.Invoice(order_id=1, customer="ada", total=12.0)]
        example.bill.mock.assert_called_once_with(order)

        assert client.post("/page-views", json=["/", "/cart"]).json() == {"queued": 2}
        assert example.page_views == ["/", "/cart"]

        assert client.put("/customers/c1", params={"name": "Ada"}).status_code == 200
        assert example.customers == {"c1": "Ada"}
        assert client.delete("/customers/c1").status_code == 200
        assert example.customers == {}

        assert client.get("/prices/plum").json() == {"plum": 0.8}


@pytest.mark.kafka
def test_on_a_real_broker() -> None:
    run = uuid.uuid4().hex[:8]
    with TestStreamBroker(example.router, with_real=True), TestClient(example.app) as client:
        order_id = int(time.time())
        order = {"id": order_id, "customer": f"bob-{run}", "amount": 5.0}
        assert client.post("/orders", json=order).status_code == 200
        wait_until(lambda: any(i.order_id == order_id for i in example.invoices))

        pages = [f"/{run}/a", f"/{run}/b", f"/{run}/c"]
        assert client.post("/page-views", json=pages).json() == {"queued": 3}
        wait_until(lambda: set(pages) <= set(example.page_views))

        customer = f"c-{run}"
        client.put(f"/customers/{customer}", params={"name": "Grace"})
        wait_until(lambda: example.customers.get(customer) == "Grace")
        client.delete(f"/customers/{customer}")
        wait_until(lambda: customer not in example.customers)

        assert client.get("/prices/apple").json() == {"apple": 0.5}
