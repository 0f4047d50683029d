"""What the outbox relay reports: rows sent, relay errors and the outbox lag.

Give an :class:`~fastapi_stream.outbox.Outbox` a ``metrics=`` object with these three
methods (:class:`OutboxMetrics`); :class:`PrometheusOutboxMetrics` is the ready-made one
(extra ``prometheus``), named like the series of
:class:`~fastapi_stream.observability.prometheus.PrometheusMiddleware`::

    outbox = Outbox(router, engine, metrics=PrometheusOutboxMetrics())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["OutboxMetrics", "PrometheusOutboxMetrics"]


class OutboxMetrics(Protocol):
    """Hooks the relay calls; each must be cheap and never raise."""

    def sent(self, channel: str, count: int) -> None:
        """``count`` rows of ``channel`` were published and marked sent."""

    def relay_error(self, reason: str) -> None:
        """A relay cycle failed (``reason``: ``"broker"`` or ``"database"``)."""

    def lag(self, seconds: float) -> None:
        """The oldest unsent row is ``seconds`` old (0 when none is waiting)."""


class PrometheusOutboxMetrics:
    """The three outbox series in ``registry`` (the default registry unless given):
    ``{prefix}_outbox_sent_messages`` (by ``destination``), ``{prefix}_outbox_relay_errors``
    (by ``reason``) and the gauge ``{prefix}_outbox_lag_seconds``."""

    def __init__(
        self, *, registry: CollectorRegistry | None = None, prefix: str = "fastapi_stream"
    ) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        registry = registry or REGISTRY
        self._sent = Counter(
            f"{prefix}_outbox_sent_messages",
            "Outbox rows published by the relay",
            ["destination"],
            registry=registry,
        )
        self._errors = Counter(
            f"{prefix}_outbox_relay_errors",
            "Relay cycles that failed, by what failed",
            ["reason"],
            registry=registry,
        )
        self._lag = Gauge(
            f"{prefix}_outbox_lag_seconds",
            "Age of the oldest unsent outbox row (0 when none waits)",
            registry=registry,
        )

    def sent(self, channel: str, count: int) -> None:
        self._sent.labels(channel).inc(count)

    def relay_error(self, reason: str) -> None:
        self._errors.labels(reason).inc()

    def lag(self, seconds: float) -> None:
        self._lag.set(seconds)
