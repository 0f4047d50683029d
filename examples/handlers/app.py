"""Message handlers: parameters, dependencies, context values and results.

Every section between ``--8<--`` markers is shown in ``docs/handlers.md``;
``tests/examples/test_handlers.py`` runs each of them. Serve it with
``.venv/bin/uvicorn examples.handlers.app:app``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, Header, Request
from pydantic import BaseModel

from fastapi_stream import Logger, Response, State, StreamBroker, StreamMessage, StreamRouter


# --8<-- [start:router]
class Inventory:
    """A stand-in for a database client, created once by the lifespan."""

    def __init__(self) -> None:
        self.stock: dict[str, int] = {"apple": 3}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # What this yields reaches HTTP routes as `request.state` and handlers as `State`.
    yield {"inventory": Inventory()}


router = StreamRouter(os.environ.get("BROKER_URL", "memory://"), lifespan=lifespan)
# --8<-- [end:router]


# --8<-- [start:body]
class Order(BaseModel):
    id: int
    sku: str
    quantity: int = 1


orders: list[Order] = []


@router.subscriber("handlers.orders")
async def take_order(order: Order) -> None:
    """One model parameter receives the whole body: {"id": 1, "sku": "apple"}."""
    orders.append(order)


# --8<-- [end:body]


# --8<-- [start:fields]
payments: list[tuple[int, float, str]] = []


@router.subscriber("handlers.payments")
async def take_payment(order_id: int, amount: float, currency: str = "EUR") -> None:
    """Several parameters receive the fields of one JSON object:
    {"order_id": 1, "amount": 9.5}."""
    payments.append((order_id, amount, currency))


# --8<-- [end:fields]


# --8<-- [start:batch]
batches: list[list[str]] = []


@router.subscriber("handlers.stock", batch=True)
async def update_stock(orders: list[Order]) -> None:
    """``batch=True``: one call for what the broker delivered at once, each item
    validated on its own (an invalid one is rejected and left out)."""
    batches.append([order.sku for order in orders])


# --8<-- [end:batch]


# --8<-- [start:headers-path]
shipments: list[tuple[str, str, int]] = []


@router.subscriber("handlers.shipments.{region}")
async def ship(order: Order, region: str, tenant_id: Annotated[str, Header()]) -> None:
    """`region` comes from the channel name ("handlers.shipments.eu"), `tenant_id` from
    the `tenant-id` header (underscores become hyphens, as on HTTP routes)."""
    shipments.append((region, tenant_id, order.id))


# --8<-- [end:headers-path]


# --8<-- [start:dependencies]
class Session:
    """A stand-in for a database session."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.closed = False


sessions: list[Session] = []


async def get_session() -> AsyncIterator[Session]:
    """A `yield` dependency: the code after `yield` runs once the handler has returned."""
    session = Session()
    sessions.append(session)
    try:
        yield session
    finally:
        session.closed = True


def tenant(tenant_id: Annotated[str, Header()]) -> str:
    """A dependency with a parameter of its own, read from the message headers."""
    return tenant_id.lower()


async def log_delivery(msg: StreamMessage, logger: Logger) -> None:
    """Runs before the handler; used for its effect, so given in `dependencies=`."""
    logger.info("reservation %s arrived on %s", msg.message_id, msg.channel)


@router.subscriber("handlers.reservations", dependencies=[Depends(log_delivery)])
async def reserve(
    order: Order,
    session: Annotated[Session, Depends(get_session)],
    tenant_id: Annotated[str, Depends(tenant)],
) -> None:
    session.writes.append(f"{tenant_id}: {order.quantity} x {order.sku}")


# --8<-- [end:dependencies]


# --8<-- [start:override]
def exchange_rate() -> float:
    """Would ask a rates service; tests replace it through `app.dependency_overrides`."""
    return 1.0


converted = router.publisher("handlers.prices-converted")


@router.subscriber("handlers.prices")
@converted
async def convert(amount: float, rate: Annotated[float, Depends(exchange_rate)]) -> float:
    """A single parameter that is not a model receives the whole body too: `9.5`."""
    return round(amount * rate, 2)


@router.get("/convert")
async def convert_amount(amount: float) -> Any:
    reply = await router.broker.request(amount, "handlers.prices")
    return reply.decode()


# --8<-- [end:override]


# --8<-- [start:context]
@router.subscriber("handlers.restock")
async def restock(
    order: Order, msg: StreamMessage, logger: Logger, broker: StreamBroker, state: State
) -> None:
    """Context values are injected by the parameter's type, whatever its name."""
    inventory: Inventory = state.inventory
    inventory.stock[order.sku] = inventory.stock.get(order.sku, 0) + order.quantity
    logger.info("restocked %s (message %s on %s)", order.sku, msg.message_id, msg.channel)
    await broker.publish(
        {"sku": order.sku, "stock": inventory.stock[order.sku]}, "handlers.stock-changed"
    )


@router.post("/restock")
async def post_restock(order: Order) -> dict[str, str]:
    await router.broker.publish(order, "handlers.restock")
    return {"queued": order.sku}


@router.get("/stock/{sku}")
async def get_stock(sku: str, request: Request) -> int:
    """HTTP routes see the same lifespan state as `request.state`."""
    inventory: Inventory = request.state.inventory
    return inventory.stock.get(sku, 0)


# --8<-- [end:context]


# --8<-- [start:results]
class Quote(BaseModel):
    sku: str
    quantity: int


class PricedQuote(BaseModel):
    sku: str
    total: float


PRICES = {"apple": 0.5, "pear": 0.75}

priced = router.publisher("handlers.quotes-priced")
audited = router.publisher("handlers.quotes-audit", headers={"source": "pricing"})


@router.subscriber("handlers.quotes")
@priced
@audited
async def price(quote: Quote) -> Response:
    """The result goes to both publishers and, for a request, back to the caller.
    `Response` adds headers (and a correlation id or broker options) to it."""
    total = PRICES.get(quote.sku, 1.0) * quote.quantity
    return Response(PricedQuote(sku=quote.sku, total=total), headers={"priced-by": "v2"})


@router.get("/quotes/{sku}")
async def get_quote(sku: str, quantity: int = 1) -> Any:
    """Request/reply from an HTTP route: publish, then wait for the handler's result."""
    reply = await router.broker.request(Quote(sku=sku, quantity=quantity), "handlers.quotes")
    return reply.decode()


# --8<-- [end:results]


# --8<-- [start:startup]
lifecycle = router.publisher("handlers.lifecycle")


@router.after_startup
async def announce(app: FastAPI) -> dict[str, Any]:
    """Runs once the broker is connected and the subscribers run; what it returns joins
    the lifespan state (``State`` in handlers, ``app.state`` for HTTP routes)."""
    await lifecycle.publish({"event": "started", "service": app.title})
    return {"announced": True}


@router.on_broker_shutdown
async def say_goodbye(app: FastAPI) -> None:
    """Runs at shutdown, after the subscribers stopped, while the broker can publish."""
    await lifecycle.publish({"event": "stopping", "service": app.title})


# --8<-- [end:startup]


# --8<-- [start:background]
notifications: list[str] = []


def notify_customer(order_id: int) -> None:
    notifications.append(f"order {order_id} is packed")


@router.subscriber("handlers.packing")
async def pack(order: Order, tasks: BackgroundTasks) -> None:
    """The task runs after the handler returned, before the message is acknowledged."""
    tasks.add_task(notify_customer, order.id)


# --8<-- [end:background]


app = FastAPI(title="fastapi-stream handlers example")
app.include_router(router)
