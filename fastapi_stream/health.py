"""Liveness and readiness routes for orchestrators such as Kubernetes.

``GET {health_url}/live`` answers 200 while the process serves HTTP and never looks at a
broker. ``GET {health_url}/ready`` answers 200 when every broker of the app answers a
ping in time and every subscriber runs, 503 otherwise. The bodies name brokers by their
address without credentials; the routes stay out of the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse

from fastapi_stream.core.url import redact

if TYPE_CHECKING:
    from fastapi_stream.core.broker import StreamBroker
    from fastapi_stream.router import StreamRouter

__all__ = [
    "ReadinessCheck",
    "add_health_routes",
    "add_readiness_check",
    "readiness",
    "register_broker",
]

#: Seconds a broker has to answer the readiness ping.
PING_TIMEOUT = 2.0

# The brokers started in each app, so one readiness route answers for all of them.
_brokers: weakref.WeakKeyDictionary[Any, list[StreamBroker]] = weakref.WeakKeyDictionary()

#: A readiness check beside a broker's ping: returns ``(ready, details)``; raising or
#: taking longer than ``PING_TIMEOUT`` counts as not ready.
ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
# Extra checks per broker (an outbox relay, say), reported under the broker's "checks".
_checks: weakref.WeakKeyDictionary[StreamBroker, dict[str, ReadinessCheck]] = (
    weakref.WeakKeyDictionary()
)


def add_readiness_check(broker: StreamBroker, name: str, check: ReadinessCheck) -> None:
    """Make ``check`` part of ``broker``'s readiness, reported as ``checks[name]``."""
    _checks.setdefault(broker, {})[name] = check


def register_broker(app: Any, broker: StreamBroker) -> None:
    """Called by a StreamRouter's lifespan: ``broker`` belongs to ``app``."""
    brokers = _brokers.setdefault(app, [])
    if broker not in brokers:
        brokers.append(broker)


def add_health_routes(router: StreamRouter, health_url: str) -> None:
    """Add ``/live`` and ``/ready`` under ``health_url`` to ``router``."""
    base = health_url.rstrip("/")

    @router.get(f"{base}/live", include_in_schema=False)
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(f"{base}/ready", include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        brokers = _brokers.get(request.app) or ([router.broker] if router.has_broker else [])
        report = await readiness(brokers)
        return JSONResponse(report, status_code=200 if report["status"] == "ready" else 503)


async def readiness(brokers: list[StreamBroker]) -> dict[str, Any]:
    """The readiness report of ``brokers``, pinged concurrently."""
    reachable = await asyncio.gather(*(_ping(broker) for broker in brokers))
    checked = await asyncio.gather(*(_run_checks(broker) for broker in brokers))
    report_brokers = []
    ready = bool(brokers)
    for broker, answered, checks in zip(brokers, reachable, checked, strict=True):
        subscribers = [
            {"channel": str(s.channel), "handler": s.name, "running": s.running}
            for s in broker.subscribers
        ]
        ok = answered and broker.started and all(s["running"] for s in subscribers)
        ok = ok and all(check["ready"] for check in checks.values())
        ready = ready and ok
        entry = {
            "broker": redact(broker.transport.describe()),  # twice safe
            "reachable": answered,
            "started": broker.started,
            "subscribers": subscribers,
        }
        if checks:
            entry["checks"] = checks
        report_brokers.append(entry)
    return {"status": "ready" if ready else "unavailable", "brokers": report_brokers}


async def _run_checks(broker: StreamBroker) -> dict[str, dict[str, Any]]:
    checks = _checks.get(broker)
    if not checks:
        return {}
    names = list(checks)
    results = await asyncio.gather(*(_check(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


async def _check(check: ReadinessCheck) -> dict[str, Any]:
    try:
        ready, details = await asyncio.wait_for(check(), PING_TIMEOUT)
    except Exception as exc:  # a broken check means not ready, never a 500
        return {"ready": False, "error": type(exc).__name__}
    return {"ready": ready, **details}


async def _ping(broker: StreamBroker) -> bool:
    try:
        return await asyncio.wait_for(broker.ping(PING_TIMEOUT), PING_TIMEOUT + 0.5)
    except Exception:  # a broken ping means not ready, never a 500
        return False
