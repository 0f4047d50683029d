"""A shop on NATS: JetStream for orders (at-least-once), core NATS for prices
(request/reply in a queue group) and logs (at-most-once), and a key-value watch.

Every section between ``--8<--`` markers is shown in ``docs/nats.md``;
``tests/examples/test_nats.py`` runs it with the test broker and on a real nats-server.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import Retry, StreamMessage
from fastapi_stream.nats import JStream, KvWatch, NatsRouter

# --8<-- [start:router]
NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")

router = NatsRouter(NATS_URL, graceful_timeout=10.0)

#: Declared when the first subscriber using it starts.
ORDERS = JStream("shop_orders", subjects=["shop.orders.>"], max_age=7 * 24 * 3600)
# --8<-- [end:router]


class Order(BaseModel):
    id: int
    amount: float


class Invoice(BaseModel):
    order_id: int
    region: str
    total: float


#: Stand-ins for a database.
invoices: list[Invoice] = []
prices: dict[str, float] = {"apple": 0.5, "plum": 0.8}
settings: dict[str, str] = {}


# --8<-- [start:jetstream]
# A durable JetStream consumer: it survives restarts, and every instance of the app
# shares its messages. A failing order is retried (the server counts deliveries), then
# dead-lettered to "shop.dead".
@router.subscriber(
    "shop.orders.{region}",
    stream=ORDERS,
    durable="billing",
    retry=Retry(max_attempts=5, backoff=1.0),
    dead_letter="shop.dead",
)
@router.publisher("shop.invoices")
async def bill(order: Order, region: str) -> Invoice:
    invoice = Invoice(order_id=order.id, region=region, total=round(order.amount * 1.2, 2))
    invoices.append(invoice)
    return invoice


# --8<-- [end:jetstream]


# --8<-- [start:core]
# Core NATS: a queue group shares the requests among the app's instances, and the
# handler's result is the reply.
@router.subscriber("shop.prices", queue="pricing")
async def price(sku: str) -> float:
    return prices.get(sku, 0.0)


# `>` matches the rest of the subject: every log line of every service.
@router.subscriber("shop.logs.>")
async def log_line(msg: StreamMessage) -> None:
    print(f"{msg.channel}: {msg.body.decode()}")  # noqa: T201 - the example's output


# --8<-- [end:core]


# --8<-- [start:kv]
# Every change of a key of the "shop_settings" bucket, created when missing.
@router.subscriber("feature.*", kv_watch=KvWatch("shop_settings"))
async def on_setting(msg: StreamMessage) -> None:
    settings[msg.channel] = msg.body.decode()


# --8<-- [end:kv]


# --8<-- [start:http]
@router.post("/orders/{region}")
async def place_order(region: str, order: Order) -> dict[str, int]:
    # A publish to a subject of a declared stream returns once JetStream stored it.
    await router.broker.publish(order, f"shop.orders.{region}")
    return {"queued": order.id}


@router.get("/prices/{sku}")
async def get_price(sku: str) -> dict[str, float]:
    reply = await router.broker.request(sku, "shop.prices", timeout=2.0)
    return {sku: reply.decode()}


app = FastAPI()
app.include_router(router)
# --8<-- [end:http]
