"""Prometheus metrics for consuming and publishing (extra ``prometheus``).

::

    metrics = PrometheusMiddleware()
    router = StreamRouter(url, middlewares=[metrics])
    add_metrics_route(router)          # GET /metrics, optional

Every series is labelled by ``broker`` (its kind: ``kafka``, ``rabbitmq``...),
``destination`` (the channel) and, for consuming, ``handler``. ``status`` of processed
messages says how each was settled: ``acked``, ``nacked``, ``rejected`` (dead-lettered
included), or ``error`` when a failed message was left unsettled.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.message import OutgoingMessage, Settlement, StreamMessage
from fastapi_stream.core.middleware import ConsumeNext, Middleware, PublishNext
from fastapi_stream.observability.logging import current_message_context

__all__ = ["PrometheusMiddleware", "add_metrics_route"]

_STATUS = {
    Settlement.ACK: "acked",
    Settlement.NACK: "nacked",
    Settlement.REJECT: "rejected",
}


class _Metrics:
    """The collectors, made once per registry and prefix (Prometheus refuses twins)."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        consume_labels = ["broker", "destination", "handler"]
        publish_labels = ["broker", "destination"]
        self.received = Counter(
            f"{prefix}_received_messages",
            "Messages delivered to a handler",
            consume_labels,
            registry=registry,
        )
        self.processed = Counter(
            f"{prefix}_processed_messages",
            "Messages processed, by how they were settled",
            [*consume_labels, "status"],
            registry=registry,
        )
        self.in_progress = Gauge(
            f"{prefix}_messages_in_progress",
            "Messages being handled now",
            consume_labels,
            registry=registry,
        )
        self.duration = Histogram(
            f"{prefix}_processing_duration_seconds",
            "Time from delivery to the handler's return",
            consume_labels,
            registry=registry,
        )
        self.published = Counter(
            f"{prefix}_published_messages",
            "Messages published, by outcome",
            [*publish_labels, "status"],
            registry=registry,
        )
        self.publish_duration = Histogram(
            f"{prefix}_publish_duration_seconds",
            "Time a publish took, confirmation included",
            publish_labels,
            registry=registry,
        )


_made: dict[tuple[int, str], _Metrics] = {}


def _metrics(registry: CollectorRegistry, prefix: str) -> _Metrics:
    key = (id(registry), prefix)
    if key not in _made:
        _made[key] = _Metrics(registry, prefix)
    return _made[key]


class PrometheusMiddleware(Middleware):
    """Counts and times messages in ``registry`` (the default registry unless given)."""

    def __init__(
        self, *, registry: CollectorRegistry | None = None, prefix: str = "fastapi_stream"
    ) -> None:
        self.registry = registry or REGISTRY
        self._metrics = _metrics(self.registry, prefix)
        self._broker = "unknown"

    def setup(self, broker: StreamBroker) -> None:
        self._broker = broker.system

    def _labels(self, message: StreamMessage) -> tuple[str, str, str]:
        context = current_message_context()
        return self._broker, message.channel, context.subscriber if context else ""

    async def consume(self, message: StreamMessage, call_next: ConsumeNext) -> Any:
        labels = self._labels(message)
        metrics = self._metrics
        metrics.received.labels(*labels).inc()
        in_progress = metrics.in_progress.labels(*labels)
        in_progress.inc()
        started = time.perf_counter()
        try:
            return await call_next(message)
        finally:
            in_progress.dec()
            metrics.duration.labels(*labels).observe(time.perf_counter() - started)

    async def settled(self, message: StreamMessage, error: Exception | None) -> None:
        settlement = message.settlement
        if settlement is None:
            status = "error" if error is not None else "unsettled"
        elif settlement is Settlement.ACK and error is not None:
            status = "rejected"  # dead-lettered: settled with the broker, not processed
        else:
            status = _STATUS[settlement]
        self._metrics.processed.labels(*self._labels(message), status).inc()

    async def publish(self, message: OutgoingMessage, call_next: PublishNext) -> None:
        labels = (self._broker, message.channel)
        started = time.perf_counter()
        status = "error"
        try:
            await call_next(message)
            status = "sent"
        finally:
            self._metrics.publish_duration.labels(*labels).observe(time.perf_counter() - started)
            self._metrics.published.labels(*labels, status).inc()


def add_metrics_route(
    router: APIRouter, *, registry: CollectorRegistry | None = None, path: str = "/metrics"
) -> None:
    """Serve ``registry`` (the default one unless given) in Prometheus' text format."""
    source = registry or REGISTRY

    @router.get(path, include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(source), media_type=CONTENT_TYPE_LATEST)
