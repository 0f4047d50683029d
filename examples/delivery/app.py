"""Delivery: ack policies, retries with backoff, dead letters and graceful shutdown.

Every section between ``--8<--`` markers is shown in ``docs/delivery.md``;
``tests/examples/test_delivery.py`` runs each of them.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from fastapi_stream import AckPolicy, Retry, StreamMessage, StreamRouter

# --8<-- [start:router]
# Shutdown stops consuming, then waits up to 30 s for handlers still running; messages
# whose handlers had to be cancelled stay unacknowledged and are delivered again.
router = StreamRouter(os.environ.get("BROKER_URL", "memory://"), graceful_timeout=30.0)
# --8<-- [end:router]


# --8<-- [start:retry]
class Payment(BaseModel):
    id: int
    amount: float = Field(gt=0)


class GatewayDown(Exception):
    pass


class Gateway:
    """A stand-in for a payment provider that fails its next `failures` calls."""

    def __init__(self) -> None:
        self.failures = 0
        self.charged: list[int] = []

    async def charge(self, payment: Payment) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise GatewayDown("payment gateway unavailable")
        self.charged.append(payment.id)


gateway = Gateway()


@router.subscriber(
    "delivery.payments",
    group="payments",
    # Up to 4 deliveries, waiting 0.5 s, 1 s, then 2 s in between (give or take 10 %).
    retry=Retry(max_attempts=4, backoff=0.5, multiplier=2.0, max_backoff=10.0),
    # After the last failed attempt, or at once for a body that does not validate.
    dead_letter="delivery.payments-dead",
)
async def charge(payment: Payment) -> None:
    await gateway.charge(payment)


# --8<-- [end:retry]


# --8<-- [start:dead-letter]
parked: list[dict[str, Any]] = []


@router.subscriber("delivery.payments-dead")
async def park(msg: StreamMessage) -> None:
    """A dead letter keeps the original body and headers, plus why it ended here."""
    parked.append(
        {
            "body": msg.body,
            "reason": msg.headers["x-dead-letter-reason"],
            "channel": msg.headers["x-original-channel"],
            "attempts": int(msg.headers["x-delivery-attempts"]),
        }
    )


# --8<-- [end:dead-letter]


# --8<-- [start:ack-first]
samples: list[tuple[str, float]] = []


@router.subscriber("delivery.metrics", ack_policy=AckPolicy.ACK_FIRST)
async def record_sample(name: str, value: float) -> None:
    """At most once: acked before the handler runs, so a crash loses the sample."""
    samples.append((name, value))


# --8<-- [end:ack-first]


# --8<-- [start:manual]
invoices: list[int] = []


@router.subscriber("delivery.invoices", ack_policy=AckPolicy.MANUAL)
async def send_invoice(payment: Payment, msg: StreamMessage) -> None:
    """The handler settles the message itself."""
    if payment.amount > 10_000:
        await msg.reject()  # a human must look at it: never deliver it again
        return
    invoices.append(payment.id)
    await msg.ack()


# --8<-- [end:manual]


# --8<-- [start:shutdown]
#: Seconds a report takes to build (tests make it short).
report_seconds = 5.0
reports: list[int] = []


@router.subscriber("delivery.reports")
async def build_report(report_id: int) -> None:
    """Still running at shutdown? It gets up to `graceful_timeout` seconds to finish."""
    await asyncio.sleep(report_seconds)
    reports.append(report_id)


# --8<-- [end:shutdown]


app = FastAPI(title="fastapi-stream delivery example")
app.include_router(router)
