"""Redis: a stream with a consumer group, a reliable list, pub/sub patterns, request/reply.

Every section between ``--8<--`` markers is shown in ``docs/redis.md``;
``tests/examples/test_redis.py`` runs each of them, on the test broker and on Redis.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import Retry
from fastapi_stream.redis import RedisRouter, StreamSub

# --8<-- [start:router]
router = RedisRouter("redis://localhost:6379/0")
# --8<-- [end:router]


class Order(BaseModel):
    id: int
    amount: float


# --8<-- [start:stream]
billed: list[int] = []


# Subscribers sharing the group "billing" split the stream's entries; a failing entry
# is delivered again (the PEL counts deliveries), at most 5 times, then it goes to the
# stream "orders.dead". Entries held by a consumer that died are claimed after 30 s.
@router.subscriber(
    stream=StreamSub("orders", group="billing"),
    retry=Retry(max_attempts=5),
    dead_letter="orders.dead",
)
async def bill(order: Order) -> None:
    billed.append(order.id)


@router.post("/orders")
async def create_order(order: Order) -> dict[str, int]:
    # XADD, keeping the stream at 100,000 entries at most.
    await router.broker.publish(order, "orders", stream=True, maxlen=100_000)
    return {"queued": order.id}


# --8<-- [end:stream]


# --8<-- [start:list]
thumbnails: list[str] = []


# A work queue: every subscriber of the list competes for its items. An item stays in a
# processing list until its handler succeeded, so a crash loses nothing.
@router.subscriber(list="thumbnails", max_workers=4)
async def make_thumbnail(path: str) -> None:
    thumbnails.append(path)


# --8<-- [end:list]


# --8<-- [start:pubsub]
alerts: list[tuple[str, str]] = []


# Pub/sub (at-most-once). "{severity}" matches one segment and reaches the handler like
# a path parameter: "alerts.high" gives severity="high".
@router.subscriber("alerts.{severity}")
async def alert(text: str, severity: str) -> None:
    alerts.append((severity, text))


# --8<-- [end:pubsub]


# --8<-- [start:request]
PRICES = {"apple": 0.5, "pear": 0.75}


@router.subscriber(list="prices")
async def price(sku: str) -> float:
    return PRICES.get(sku, 0.0)


async def quote(sku: str) -> float:
    """Ask the price service; the reply comes back over pub/sub within 2 seconds."""
    reply = await router.broker.request(sku, "prices", list=True, timeout=2.0)
    return float(reply.decode())


# --8<-- [end:request]


app = FastAPI(title="fastapi-stream Redis example")
app.include_router(router)
