"""The memory broker: groups, fan-out, request/reply and bounded queues, in one process.

Every section between ``--8<--`` markers is shown in ``docs/memory.md``;
``tests/examples/test_memory.py`` runs each of them.
"""

from __future__ import annotations

from fastapi import FastAPI

from fastapi_stream import StreamRouter
from fastapi_stream.memory import MemoryEngine, MemoryTransport

# --8<-- [start:shared]
# Two routers, as two parts of one process might have. The same `memory://shop` URL
# means the same engine, so what one publishes the other consumes.
shop = StreamRouter("memory://shop")
warehouse = StreamRouter("memory://shop", health_url="/health/warehouse")
# --8<-- [end:shared]


# --8<-- [start:groups]
packed: dict[str, list[int]] = {"north": [], "south": []}
emailed: list[int] = []


# Two subscribers in one group compete: each order is packed once, by one of them.
@warehouse.subscriber("shop.orders", group="packers")
async def pack_north(order_id: int) -> None:
    packed["north"].append(order_id)


@warehouse.subscriber("shop.orders", group="packers")
async def pack_south(order_id: int) -> None:
    packed["south"].append(order_id)


# No group: a private one, so this subscriber gets every order as well (fan-out).
@shop.subscriber("shop.orders")
async def email_customer(order_id: int) -> None:
    emailed.append(order_id)


# --8<-- [end:groups]


# --8<-- [start:request]
STOCK = {"apple": 3, "pear": 0}


@warehouse.subscriber("shop.stock")
async def stock_level(sku: str) -> int:
    return STOCK.get(sku, 0)


async def available(sku: str) -> int:
    """Ask the warehouse and wait for its answer (at most one second)."""
    reply = await shop.broker.request(sku, "shop.stock", timeout=1.0)
    return int(reply.decode())


# --8<-- [end:request]


# --8<-- [start:bounded]
# Each group holds at most 1000 messages; a publish to a full group waits up to 2 s
# for room, then raises PublishError. This engine is private to `archive`.
engine = MemoryEngine(max_queue=1000, publish_timeout=2.0)
archive = StreamRouter(MemoryTransport(engine))
archived: list[str] = []


@archive.subscriber("shop.events", group="archivist")
async def archive_event(event: str) -> None:
    archived.append(event)


# --8<-- [end:bounded]


app = FastAPI(title="fastapi-stream memory example")
app.include_router(shop)
app.include_router(warehouse)
