"""``make demo``: the quickstart service, plus log lines saying where to look and a few
demo orders published so the log shows messages flowing."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI

from examples.quickstart.app import Order, router

log = logging.getLogger("fastapi_stream.demo")


async def send_demo_orders(count: int = 3, interval: float = 1.0) -> None:
    for number in range(1, count + 1):
        await asyncio.sleep(interval)
        await router.broker.publish(Order(id=number, amount=round(9.99 * number, 2)), "orders")
        log.info("published demo order %s", number)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # uvicorn configures only its own loggers; show the library's and the demo's too.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    base = os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000")
    log.info("broker:      %s", router.broker.transport.describe())
    log.info("Swagger UI:  %s/docs", base)
    log.info("liveness:    %s/health/live", base)
    log.info("readiness:   %s/health/ready", base)
    log.info("orders seen: %s/orders/validated", base)
    task = asyncio.create_task(send_demo_orders())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


app = FastAPI(title="fastapi-stream quickstart", lifespan=lifespan)
app.include_router(router)
