"""The quickstart service: orders come in over HTTP, are validated by a message handler
and published on; another handler records what was validated.

Run it with ``make demo``: the embedded memory broker, nothing else to start. Set
``BROKER_URL`` (``BROKER_URL=kafka://localhost:9092 make demo``) to use a real broker
whose transport is installed; see docs/brokers.md for the schemes available.
``docs/quickstart.md`` shows this file and ``tests/examples/test_quickstart.py`` tests it.
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from fastapi_stream import Logger, StreamMessage, StreamRouter

# --8<-- [start:router]
# The URL's scheme picks the broker; memory:// is the in-process one.
BROKER_URL = os.environ.get("BROKER_URL", "memory://")

router = StreamRouter(BROKER_URL)
# --8<-- [end:router]


class Order(BaseModel):
    id: int
    amount: float = Field(gt=0)


class ValidatedOrder(BaseModel):
    id: int
    amount: float
    currency: str


def currency() -> str:
    """A dependency, exactly as in an HTTP route (tests override it)."""
    return "EUR"


#: What the ``audit`` handler saw, newest last (a stand-in for a database).
audit_log: list[ValidatedOrder] = []


# --8<-- [start:handlers]
@router.subscriber("orders", group="validators")
@router.publisher("orders-validated")
async def validate(order: Order, logger: Logger, cur: str = Depends(currency)) -> ValidatedOrder:
    """Validate an order and pass it on."""
    logger.info("validating order %s", order.id)
    return ValidatedOrder(id=order.id, amount=order.amount, currency=cur)


@router.subscriber("orders-validated")
async def audit(order: ValidatedOrder, msg: StreamMessage, logger: Logger) -> None:
    """Record every validated order."""
    audit_log.append(order)
    logger.info(
        "order %s validated (%s %s), correlation %s",
        order.id,
        order.amount,
        order.currency,
        msg.correlation_id,
    )


# --8<-- [end:handlers]


# --8<-- [start:route]
@router.post("/orders")
async def create_order(order: Order) -> dict[str, int]:
    await router.broker.publish(order, "orders")
    return {"queued": order.id}


# --8<-- [end:route]


@router.get("/orders/validated")
async def validated_orders() -> list[ValidatedOrder]:
    return audit_log


app = FastAPI(title="fastapi-stream quickstart")
app.include_router(router)
