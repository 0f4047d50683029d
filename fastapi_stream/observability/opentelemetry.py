"""OpenTelemetry tracing and metrics for consuming and publishing (extra ``otel``).

Spans and metrics follow the OpenTelemetry messaging semantic conventions: a ``send
{destination}`` producer span per publish, whose context travels in the message headers
(W3C ``traceparent``), and a ``process {destination}`` consumer span per message that
continues it, so an HTTP request, the publish it makes, the handler that consumes it and
what that handler publishes form one trace::

    router = StreamRouter(url, middlewares=[TelemetryMiddleware()])
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.middleware import ConsumeNext, Middleware, PublishNext

__all__ = ["TelemetryMiddleware"]

_SCOPE = "fastapi_stream"


class TelemetryMiddleware(Middleware):
    """Traces and measures every consume and publish of the broker it is given to.

    Without explicit providers it uses the global ones, which is what
    ``opentelemetry-instrument`` and FastAPI's instrumentation configure.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._process_duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="Duration of processing"
        )
        self._send_duration = meter.create_histogram(
            "messaging.client.operation.duration", unit="s", description="Duration of sends"
        )
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Messages sent"
        )
        self._consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Messages delivered to handlers",
        )
        self._system = "unknown"

    def setup(self, broker: StreamBroker) -> None:
        self._system = broker.system

    async def consume(self, message: StreamMessage, call_next: ConsumeNext) -> Any:
        attributes: dict[str, Any] = {
            "messaging.system": self._system,
            "messaging.destination.name": message.channel,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
        }
        self._consumed.add(1, attributes)
        span_attributes = dict(attributes)
        if message.message_id:
            span_attributes["messaging.message.id"] = message.message_id
        if message.correlation_id:
            span_attributes["messaging.message.conversation_id"] = message.correlation_id
        span_attributes["messaging.message.body.size"] = len(message.body)
        parent = propagate.extract(message.headers)
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"process {message.channel}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await call_next(message)
            except Exception as exc:
                _record_error(span, exc, attributes)
                raise
            finally:
                self._process_duration.record(time.perf_counter() - started, attributes)

    async def publish(self, message: OutgoingMessage, call_next: PublishNext) -> None:
        attributes: dict[str, Any] = {
            "messaging.system": self._system,
            "messaging.destination.name": message.channel,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        span_attributes = {
            **attributes,
            "messaging.message.id": message.message_id,
            "messaging.message.body.size": len(message.body),
        }
        if message.correlation_id:
            span_attributes["messaging.message.conversation_id"] = message.correlation_id
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            f"send {message.channel}",
            kind=SpanKind.PRODUCER,
            attributes=span_attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            propagate.inject(message.headers)
            try:
                await call_next(message)
            except Exception as exc:
                _record_error(span, exc, attributes)
                raise
            finally:
                self._send_duration.record(time.perf_counter() - started, attributes)
            self._sent.add(1, attributes)


def _record_error(span: trace.Span, exc: Exception, attributes: dict[str, Any]) -> None:
    attributes["error.type"] = type(exc).__qualname__
    span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
