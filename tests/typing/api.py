"""Type-checked by mypy (never run): public usage keeps its types."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type
from unittest.mock import MagicMock

from fastapi import Depends
from pydantic import BaseModel

from fastapi_stream import Endpoint, Logger, Publisher, StreamMessage, StreamRouter

router = StreamRouter("memory://")


class Order(BaseModel):
    id: int


def tenant() -> str:
    return "acme"


@router.subscriber("orders")
@router.publisher("orders-validated")
async def validate(order: Order, logger: Logger, who: str = Depends(tenant)) -> Order:
    return order


endpoint: Endpoint[..., Coroutine[Any, Any, Order]] = validate
assert_type(validate.mock, MagicMock)
publisher = router.publisher("out")
assert_type(publisher, Publisher)


async def usage(msg: StreamMessage) -> None:
    result: Order = await validate(Order(id=1), Logger("x"))
    await publisher.publish(result)
    await router.broker.publish(result, "orders", headers={"k": "v"}, correlation_id="c")
    reply: StreamMessage = await router.broker.request(result, "rpc", timeout=1.0)
    await reply.ack()
    await validate.wait_call(1.0)
