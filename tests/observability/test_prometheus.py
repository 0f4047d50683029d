"""Prometheus metrics count exactly what happened."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from fastapi_stream import StreamRouter
from fastapi_stream.observability.prometheus import PrometheusMiddleware, add_metrics_route


def test_counts_after_n_acked_and_m_failed_messages(memory_url: str) -> None:
    registry = CollectorRegistry()
    router = StreamRouter(memory_url, middlewares=[PrometheusMiddleware(registry=registry)])
    handled = 0

    @router.subscriber("orders", retry=False)
    async def place(number: int) -> None:
        nonlocal handled
        handled += 1
        if number % 3 == 0:
            raise ValueError("every third fails")

    add_metrics_route(router, registry=registry)
    app = FastAPI()
    app.include_router(router)

    async def publish_all() -> None:
        for number in range(1, 10):  # 3, 6 and 9 fail
            await router.broker.publish(number, "orders")
        async with asyncio.timeout(2):
            while handled < 9:
                await asyncio.sleep(0.005)

    with TestClient(app) as client:
        client.portal.call(publish_all)  # type: ignore[union-attr]
        text = client.get("/metrics").text

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(
            name, {"broker": "memory", "destination": "orders", **labels}
        )

    handler = {"handler": place.func.__qualname__}
    assert value("fastapi_stream_received_messages_total", **handler) == 9
    assert value("fastapi_stream_processed_messages_total", **handler, status="acked") == 6
    assert value("fastapi_stream_processed_messages_total", **handler, status="rejected") == 3
    assert value("fastapi_stream_messages_in_progress", **handler) == 0
    assert value("fastapi_stream_processing_duration_seconds_count", **handler) == 9
    assert value("fastapi_stream_published_messages_total", status="sent") == 9
    assert value("fastapi_stream_publish_duration_seconds_count") == 9
    assert "fastapi_stream_processed_messages_total" in text


@pytest.mark.anyio
async def test_two_middlewares_share_one_registry(memory_url: str) -> None:
    registry = CollectorRegistry()
    first = PrometheusMiddleware(registry=registry)
    second = PrometheusMiddleware(registry=registry)  # no duplicate-collector error
    router = StreamRouter(memory_url, middlewares=[first, second])
    async with router.broker as broker:
        await broker.publish(None, "nobody-listens")
    assert (
        registry.get_sample_value(
            "fastapi_stream_published_messages_total",
            {"broker": "memory", "destination": "nobody-listens", "status": "sent"},
        )
        == 2
    )
