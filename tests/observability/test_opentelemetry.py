"""One trace across HTTP -> publish -> consume -> publish, spelled as the OpenTelemetry
messaging semantic conventions spell it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from fastapi_stream import StreamRouter
from fastapi_stream.observability.opentelemetry import TelemetryMiddleware


class Order(BaseModel):
    id: int


@pytest.fixture
def telemetry() -> Iterator[
    tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]
]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, exporter, meter_provider, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_http_publish_consume_publish_is_one_trace(memory_url: str, telemetry) -> None:
    tracer_provider, exporter, meter_provider, reader = telemetry
    middleware = TelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)
    router = StreamRouter(memory_url, middlewares=[middleware])
    shipped = asyncio.Event()

    @router.subscriber("orders")
    @router.publisher("shipments")
    async def place(order: Order) -> Order:
        return order

    @router.subscriber("shipments")
    async def ship(order: Order) -> None:
        if order.id == 2:
            raise ValueError("cannot ship")
        shipped.set()

    @router.post("/orders")
    async def create(order: Order) -> None:
        await router.broker.publish(order, "orders", correlation_id="conv-1")

    app = FastAPI()
    app.include_router(router)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    with TestClient(app) as client:
        client.post("/orders", json={"id": 1})
        client.portal.call(asyncio.wait_for, shipped.wait(), 2)  # type: ignore[union-attr]

    spans = exporter.get_finished_spans()
    messaging = {s.name: s for s in spans if s.attributes and "messaging.system" in s.attributes}
    assert set(messaging) == {
        "send orders",
        "process orders",
        "send shipments",
        "process shipments",
    }
    assert len({s.context.trace_id for s in spans}) == 1
    http = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert messaging["send orders"].parent is not None
    assert messaging["send orders"].parent.span_id == http.context.span_id
    assert _parent(messaging["process orders"]) == messaging["send orders"].context.span_id
    assert _parent(messaging["send shipments"]) == messaging["process orders"].context.span_id
    assert _parent(messaging["process shipments"]) == messaging["send shipments"].context.span_id

    process = messaging["process orders"]
    assert process.kind is SpanKind.CONSUMER
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "memory"
    assert process.attributes["messaging.destination.name"] == "orders"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["messaging.message.conversation_id"] == "conv-1"
    assert process.attributes["messaging.message.id"]
    assert messaging["send orders"].kind is SpanKind.PRODUCER

    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert {
        "messaging.process.duration",
        "messaging.client.operation.duration",
        "messaging.client.sent.messages",
        "messaging.client.consumed.messages",
    } <= set(metrics)
    sent = {
        p.attributes["messaging.destination.name"]: p.value
        for p in metrics["messaging.client.sent.messages"].data.data_points
    }
    assert sent == {"orders": 1, "shipments": 1}


@pytest.mark.anyio
async def test_a_failing_handler_marks_its_span(memory_url: str, telemetry) -> None:
    tracer_provider, exporter, meter_provider, _ = telemetry
    middleware = TelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)
    router = StreamRouter(memory_url, middlewares=[middleware], retry=False)
    failed = asyncio.Event()

    @router.subscriber("boom")
    async def boom() -> None:
        failed.set()
        raise ValueError("nope")

    async with router.broker as broker:
        await broker.publish(None, "boom")
        await asyncio.wait_for(failed.wait(), 2)
        await asyncio.sleep(0.02)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "process boom"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "ValueError"


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None
