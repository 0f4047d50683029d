"""Liveness and readiness routes for orchestrators such as Kubernetes.

``GET {health_url}/live`` answers 200 while the process serves HTTP and never looks at the
broker. ``GET {health_url}/ready`` answers 200 when the broker answers a ping and every
subscriber runs, 503 otherwise. Bodies name the broker by its address without
credentials; the routes stay out of the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from fastapi_stream.router import StreamRouter

__all__ = ["add_health_routes"]

PING_TIMEOUT = 2.0


def add_health_routes(router: StreamRouter, health_url: str) -> None:
    """Add ``/live`` and ``/ready`` under ``health_url`` to ``router``."""
    base = health_url.rstrip("/")

    @router.get(f"{base}/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(f"{base}/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        report = await readiness(router)
        return JSONResponse(report, status_code=200 if report["status"] == "ready" else 503)


async def readiness(router: StreamRouter) -> dict[str, Any]:
    """The readiness report of ``router``'s broker."""
    if not router.has_broker:
        return {"status": "unavailable", "brokers": []}
    broker = router.broker
    try:
        reachable = await asyncio.wait_for(broker.ping(PING_TIMEOUT), PING_TIMEOUT + 0.5)
    except TimeoutError:
        reachable = False
    subscribers = [
        {"channel": str(s.channel), "handler": s.name, "running": s.running}
        for s in broker.subscribers
    ]
    ok = reachable and broker.started and all(s["running"] for s in subscribers)
    return {
        "status": "ready" if ok else "unavailable",
        "brokers": [{"broker": broker.transport.describe(), "reachable": reachable}],
        "subscribers": subscribers,
    }
