"""A shop on Kafka: a consumer group with keyed orders, a batch handler, request/reply,
and a compacted topic with tombstones.

Every section between ``--8<--`` markers is shown in ``docs/kafka.md``;
``tests/examples/test_kafka.py`` runs it with the test broker and on a real
Kafka-protocol broker.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import Response, Retry, StreamMessage
from fastapi_stream.kafka import KafkaRouter, KafkaTopic, message_key

# --8<-- [start:router]
router = KafkaRouter(
    os.environ.get("KAFKA_SERVERS", "localhost:9092"),
    client_id="shop",
    # How long the group waits for a silent member; a new member joins in about half.
    session_timeout_ms=int(os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "10000")),
    # Created at startup when missing.
    topics=[
        KafkaTopic("shop.orders", partitions=4),
        KafkaTopic("shop.customers", config={"cleanup.policy": "compact"}),
    ],
)
# --8<-- [end:router]


class Order(BaseModel):
    id: int
    customer: str
    amount: float


class Invoice(BaseModel):
    order_id: int
    customer: str
    total: float


#: Stand-ins for a database.
invoices: list[Invoice] = []
customers: dict[str, str] = {}
page_views: list[str] = []
prices: dict[str, float] = {"apple": 0.5, "plum": 0.8}


# --8<-- [start:group]
# Every instance of the app shares the partitions of "shop.orders" (group "billing").
# Four orders are billed at once, but one customer's orders (one key) never overtake
# each other. A failing order is retried, then dead-lettered to "shop.orders.dead";
# offsets are committed only past orders that are done.
@router.subscriber(
    "shop.orders",
    group_id="billing",
    max_workers=4,
    retry=Retry(max_attempts=5, backoff=1.0),
    dead_letter="shop.orders.dead",
)
@router.publisher("shop.invoices")
async def bill(order: Order) -> Response:
    invoice = Invoice(order_id=order.id, customer=order.customer, total=order.amount * 1.2)
    invoices.append(invoice)
    # The invoice keeps the order's key, so it lands in the customer's partition too.
    return Response(invoice, key=order.customer)


# --8<-- [end:group]


# --8<-- [start:batch]
# Up to 500 records per call; waits up to 200 ms for a batch to fill up.
@router.subscriber("shop.page-views", batch=True, max_records=500, batch_timeout_ms=200)
async def count_views(pages: list[str]) -> None:
    page_views.extend(pages)


# --8<-- [end:batch]


# --8<-- [start:compacted]
# No group: every instance reads the whole compacted topic from the start and keeps
# the latest value per key. A tombstone (a null value) deletes the key.
@router.subscriber("shop.customers", auto_offset_reset="earliest")
async def customer_changed(msg: StreamMessage) -> None:
    key = (message_key(msg) or b"").decode()
    if msg.body:
        customers[key] = msg.body.decode()
    else:
        customers.pop(key, None)


# --8<-- [end:compacted]


# --8<-- [start:request]
# The handler's result is the reply: Kafka has no reply queues, so each app instance
# reads replies from a topic of its own, matched by correlation id.
@router.subscriber("shop.prices", group_id="pricing")
async def price(sku: str) -> float:
    return prices.get(sku, 0.0)


# --8<-- [end:request]


# --8<-- [start:http]
@router.post("/orders")
async def place_order(order: Order) -> dict[str, int]:
    # Returns once every in-sync replica has the order (acks="all").
    await router.broker.publish(order, "shop.orders", key=order.customer)
    return {"queued": order.id}


@router.post("/page-views")
async def record_views(pages: list[str]) -> dict[str, int]:
    await router.publish_batch(*pages, topic="shop.page-views")
    return {"queued": len(pages)}


@router.put("/customers/{customer}")
async def save_customer(customer: str, name: str) -> None:
    await router.broker.publish(name, "shop.customers", key=customer)


@router.delete("/customers/{customer}")
async def delete_customer(customer: str) -> None:
    await router.broker.publish(None, "shop.customers", key=customer)  # a tombstone


@router.get("/prices/{sku}")
async def get_price(sku: str) -> dict[str, float]:
    reply = await router.broker.request(sku, "shop.prices", timeout=5.0)
    return {sku: reply.decode()}


app = FastAPI()
app.include_router(router)
# --8<-- [end:http]
