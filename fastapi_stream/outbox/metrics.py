"""What the outbox relay reports: rows sent, rows set aside as failed, relay errors and
the outbox lag.

Give an :class:`~fastapi_stream.outbox.Outbox` a ``metrics=`` object with these methods
(:class:`OutboxMetrics`; ``failed`` may be missing from an object written for the
first version); :class:`PrometheusOutboxMetrics` is the ready-made one
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

    def failed(self, channel: str, count: int) -> None:
        """``count`` rows of ``channel`` were refused ``max_attempts`` times by the broker
        and set aside as failed."""

    def relay_error(self, reason: str) -> None:
        """A relay cycle failed (``reason``: ``"broker"`` when the broker was not
        reached, ``"message"`` when it refused a message, ``"database"``)."""

    def lag(self, seconds: float) -> None:
        """The oldest unsent row is ``seconds`` old (0 when none is waiting)."""


class PrometheusOutboxMetrics:
    """The outbox series in ``registry`` (the default registry unless given):
    ``{prefix}_outbox_sent_messages`` and ``{prefix}_outbox_failed_messages`` (by
    ``destination``), ``{prefix}_outbox_relay_errors`` (by ``reason``) and the gauge
    ``{prefix}_outbox_lag_seconds``."""

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
        self._failed = Counter(
            f"{prefix}_outbox_failed_messages",
            "Outbox rows the broker refused max_attempts times, set aside as failed",
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

    def failed(self, channel: str, count: int) -> None:
        self._failed.labels(channel).inc(count)

    def relay_error(self, reason: str) -> None:
        self._errors.labels(reason).inc()

    def lag(self, seconds: float) -> None:
        self._lag.set(seconds)
