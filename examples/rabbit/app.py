"""RabbitMQ: queues, a topic exchange, quorum queues with dead letters, and requests.

Every section between ``--8<--`` markers is shown in ``docs/rabbit.md``;
``tests/examples/test_rabbit.py`` runs each of them on the test broker and on RabbitMQ.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import Retry, StreamMessage
from fastapi_stream.rabbit import (
    ExchangeType,
    QueueType,
    RabbitExchange,
    RabbitQueue,
    RabbitRouter,
)

# --8<-- [start:router]
router = RabbitRouter(os.environ.get("RABBIT_URL", "amqp://guest:guest@localhost:5672/"))
# --8<-- [end:router]


class Order(BaseModel):
    id: int
    region: str
    amount: float


# --8<-- [start:queue]
shipped: list[int] = []


# A plain name is a durable queue of that name, fed through RabbitMQ's default
# exchange: `broker.publish(msg, "shop.shipping")` lands here. Subscribers of one queue
# compete for its messages.
@router.subscriber("shop.shipping")
async def ship(order: Order) -> None:
    shipped.append(order.id)


# --8<-- [end:queue]


# --8<-- [start:topic]
orders = RabbitExchange("shop.orders", type=ExchangeType.TOPIC)
audited: list[str] = []
per_region: dict[str, int] = {}


# `#` matches zero or more words: every order event reaches the audit queue.
@router.subscriber(RabbitQueue("shop.audit", routing_key="orders.#"), orders)
async def audit(order: Order, msg: StreamMessage) -> None:
    audited.append(msg.channel)  # the routing key it was published with


# `{region}` binds as `*` (exactly one word) and reaches the handler like a path parameter.
@router.subscriber(RabbitQueue("shop.regions", routing_key="orders.{region}.created"), orders)
async def count(order: Order, region: str) -> None:
    per_region[region] = per_region.get(region, 0) + 1


# --8<-- [end:topic]


# --8<-- [start:publish]
@router.post("/orders")
async def create(order: Order) -> dict[str, int]:
    # Confirmed by RabbitMQ before this returns; no queue bound for the key would raise
    # PublishError (mandatory publish) instead of losing the order.
    await router.broker.publish(
        order, f"orders.{order.region}.created", exchange=orders, priority=5
    )
    await router.broker.publish(order, "shop.shipping")
    return {"queued": order.id}


# --8<-- [end:publish]


# --8<-- [start:quorum]
dead_payments = RabbitExchange("shop.payments.dlx", type=ExchangeType.FANOUT)
payments = RabbitQueue(
    "shop.payments",
    queue_type=QueueType.QUORUM,  # RabbitMQ counts deliveries: msg.delivery_attempt
    arguments={"x-dead-letter-exchange": dead_payments.name},
)
charged: list[int] = []
refused: list[int] = []


@router.subscriber(payments, retry=Retry(max_attempts=3, backoff=0.2))
async def charge(order: Order, msg: StreamMessage) -> None:
    if order.amount > 1000:
        # Fails on every delivery: after the third, the message is rejected and
        # RabbitMQ moves it to the queue's dead-letter exchange.
        raise ValueError(f"order {order.id} needs a manual review")
    charged.append(order.id)


@router.subscriber(RabbitQueue("shop.payments.review"), dead_payments)
async def review(order: Order) -> None:
    refused.append(order.id)


# --8<-- [end:quorum]


# --8<-- [start:request]
STOCK = {"apple": 3, "pear": 0}


@router.subscriber("shop.stock")
async def stock_level(sku: str) -> int:
    return STOCK.get(sku, 0)


async def available(sku: str) -> int:
    """Ask the stock service and wait for its answer (at most two seconds). The reply
    comes through RabbitMQ's direct reply-to: no reply queue to declare."""
    reply = await router.broker.request(sku, "shop.stock", timeout=2.0)
    return int(reply.decode())


# --8<-- [end:request]


app = FastAPI(title="fastapi-stream RabbitMQ example")
app.include_router(router)
