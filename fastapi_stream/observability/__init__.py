"""Logging context, OpenTelemetry and Prometheus for message handlers.

``fastapi_stream.observability.logging`` needs nothing beyond the standard library; the
OpenTelemetry and Prometheus modules need the ``otel`` and ``prometheus`` extras and are
imported only when used.
"""
