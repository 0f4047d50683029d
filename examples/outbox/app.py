"""An orders service whose order and event never disagree: ``POST /orders`` stores the
order and its ``order-created`` event in one transaction (the outbox), and billing
consumes the event through an inbox, so a redelivered event bills once.

Run it with ``uvicorn examples.outbox.app:app``; ``DATABASE_URL`` (SQLite by default, or
``postgresql+asyncpg://...``) and ``BROKER_URL`` (the memory broker by default) pick
where it runs. Everything is made at import, at module level, as in a small service;
the tests load the module once per database with those variables set.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import Column, Float, Integer, MetaData, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from fastapi_stream import StreamRouter
from fastapi_stream.outbox import Inbox, Outbox

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///orders.db")
BROKER_URL = os.environ.get("BROKER_URL", "memory://")

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("amount", Float, nullable=False),
)
invoices = Table(
    "invoices",
    metadata,
    Column("order_id", Integer, primary_key=True),
    Column("amount", Float, nullable=False),
)


class Order(BaseModel):
    id: int
    amount: float


class OrderCreated(BaseModel):
    order_id: int
    amount: float


# --8<-- [start:setup]
engine = create_async_engine(DATABASE_URL)
sessions = async_sessionmaker(engine, expire_on_commit=False)

router = StreamRouter(BROKER_URL)
outbox = Outbox(router, engine)  # the relay runs while the broker runs
order_created = outbox.publisher("order-created", title="An order was stored")
inbox = Inbox(engine)
# --8<-- [end:setup]


# --8<-- [start:publish]
@router.post("/orders", status_code=201)
async def create_order(order: Order) -> dict[str, Any]:
    async with sessions() as session, session.begin():
        await session.execute(insert(orders).values(id=order.id, amount=order.amount))
        event = OrderCreated(order_id=order.id, amount=order.amount)
        message_id = await order_created.publish(session, event, key=str(order.id))
    # Committed: the order is stored and its event will be sent, or neither happened.
    return {"id": order.id, "event": message_id}


# --8<-- [end:publish]


# --8<-- [start:inbox]
@router.subscriber("order-created", group="billing", middlewares=[inbox])
async def bill(event: OrderCreated, session: AsyncSession = Depends(inbox.session)) -> None:
    """Bill an order once, however often its event is delivered."""
    await session.execute(insert(invoices).values(order_id=event.order_id, amount=event.amount))


# --8<-- [end:inbox]


@router.get("/invoices")
async def list_invoices() -> list[dict[str, Any]]:
    async with sessions() as session:
        rows = await session.execute(select(invoices).order_by(invoices.c.order_id))
        return [dict(row._mapping) for row in rows]


# --8<-- [start:app]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield
    await engine.dispose()  # after the router's lifespan: the relay has stopped


app = FastAPI(title="orders with an outbox", lifespan=lifespan)
app.include_router(router)
# --8<-- [end:app]
