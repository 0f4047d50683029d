"""Health, logging context, tracing and metrics on one service."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from fastapi_stream import Logger, StreamRouter
from fastapi_stream.observability.logging import MessageContextFilter
from fastapi_stream.observability.opentelemetry import TelemetryMiddleware
from fastapi_stream.observability.prometheus import PrometheusMiddleware, add_metrics_route


# --8<-- [start:logging]
def configure_logging() -> None:
    """Show every record with the context of the message being handled, if any."""
    handler = logging.StreamHandler()
    handler.addFilter(MessageContextFilter())  # gives every record the attributes
    handler.setFormatter(logging.Formatter("%(levelname)s [%(stream_context)s] %(message)s"))
    root = logging.getLogger()
    if not any(isinstance(f, MessageContextFilter) for h in root.handlers for f in h.filters):
        root.addHandler(handler)
        root.setLevel(logging.INFO)


# --8<-- [end:logging]

# --8<-- [start:router]
registry = CollectorRegistry()  # the default registry works too; a test wants its own

router = StreamRouter(
    os.environ.get("BROKER_URL", "memory://observability"),
    health_url="/health",  # GET /health/live and /health/ready (the default)
    message_log_level=logging.INFO,  # a received and a processed line per message
    middlewares=[TelemetryMiddleware(), PrometheusMiddleware(registry=registry)],
)
add_metrics_route(router, registry=registry)  # GET /metrics
# --8<-- [end:router]


# --8<-- [start:handler]
@router.subscriber("payments")
async def settle(amount: float, logger: Logger) -> None:
    logger.info("settling %.2f", amount)  # -> INFO [payments settle <message id>] settling


# --8<-- [end:handler]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    configure_logging()
    yield


app = FastAPI(title="observability example", lifespan=lifespan)
app.include_router(router)
