"""A documented RabbitMQ service whose AsyncAPI document code generators can use.

Two routers on one broker: orders on RabbitMQ's default exchange (a handler that publishes
what it returns, and a request/reply handler), shipping on a topic exchange with a
consumer group. The app says who it is (id, contact, license,
tags), so the official parser has nothing to warn about.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Header
from pydantic import BaseModel

from fastapi_stream.rabbit import ExchangeType, RabbitExchange, RabbitRouter

BROKER_URL = os.environ.get("BROKER_URL", "amqp://guest:guest@localhost:5672/")
handled: list[str] = []


# --8<-- [start:models]
class Order(BaseModel):
    id: int
    amount: float


class Receipt(BaseModel):
    order_id: int
    total: float


class Quote(BaseModel):
    sku: str
    quantity: int


class Price(BaseModel):
    sku: str
    total: float


class Shipment(BaseModel):
    order_id: int
    region: str


# --8<-- [end:models]


# --8<-- [start:app]
def make_app(url: str = BROKER_URL, name: str = "shop") -> FastAPI:
    """The service; ``name`` prefixes its queues, exchange and routing keys."""
    orders = RabbitRouter(
        url,
        prefix="/orders",
        server_name="orders",
        description="Orders and prices, on RabbitMQ's default exchange.",
        tags=["orders"],
    )

    @orders.subscriber(f"{name}.orders", title="Take an order")
    @orders.publisher(f"{name}.receipts", description="A receipt per order taken.")
    async def take_order(order: Order, tenant: str | None = Header(None)) -> Receipt:
        """Take an order; the receipt goes to the receipts queue."""
        handled.append(f"order {order.id} for {tenant or 'nobody'}")
        return Receipt(order_id=order.id, total=order.amount)

    @orders.subscriber(f"{name}.prices", title="Price a quote")
    async def price(quote: Quote) -> Price:
        """Answer a request for a price."""
        return Price(sku=quote.sku, total=2.5 * quote.quantity)

    shipping = RabbitRouter(
        url,
        exchange=RabbitExchange(f"{name}.events", type=ExchangeType.TOPIC),
        prefix="/shipping",
        server_name="shipping",
        description="Shipping events, on a topic exchange.",
        tags=["shipping"],
    )

    # The group's own queue, "<name>.shipments.dispatch", bound to the exchange with the
    # routing key "<name>.shipments": every group gets every shipment, its consumers compete.
    @shipping.subscriber(f"{name}.shipments", group="dispatch", title="Dispatch a shipment")
    async def dispatch(shipment: Shipment) -> None:
        """Dispatch a shipment to a truck of its region."""
        handled.append(f"shipment {shipment.order_id} in {shipment.region}")

    app = FastAPI(
        title="Shop",
        version="1.0.0",
        description="Takes orders, prices quotes and dispatches shipments.",
        contact={
            "name": "Shop team",
            "url": "https://shop.example.com",
            "email": "shop@example.com",
        },
        license_info={"name": "Apache 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        openapi_tags=[{"name": "orders"}, {"name": "shipping"}],
    )
    app.state.asyncapi_id = "urn:example:shop"  # the id of the AsyncAPI 2.6.0 document
    app.include_router(orders)
    app.include_router(shipping)
    return app


app = make_app()
# --8<-- [end:app]
