"""Type-checked by mypy (never run): KafkaRouter usage keeps its types."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from pydantic import BaseModel

from fastapi_stream import Endpoint, Publisher, StreamMessage
from fastapi_stream.kafka import KafkaRouter, KafkaTopic, Sasl, message_key

router = KafkaRouter(
    "localhost:9092",
    sasl=Sasl("user", "password", mechanism="SCRAM-SHA-256"),
    tls=True,
    topics=[KafkaTopic("orders", partitions=3)],
)


class Order(BaseModel):
    id: int


@router.subscriber("orders", "refunds", group_id="billing", max_workers=4)
async def bill(order: Order) -> Order:
    return order


@router.subscriber("clicks", batch=True, max_records=100, batch_timeout_ms=50)
async def clicks(items: list[str]) -> None: ...


endpoint: Endpoint[..., Coroutine[Any, Any, Order]] = bill
keyed: Publisher = router.publisher("invoices", key="tenant")


async def usage(msg: StreamMessage) -> None:
    await router.publish_batch(Order(id=1), Order(id=2), topic="orders", key="k")
    await router.broker.publish(None, "customers", key="c1", partition=0, timestamp_ms=1)
    key: bytes | None = message_key(msg)
    assert key is None or isinstance(key, bytes)
