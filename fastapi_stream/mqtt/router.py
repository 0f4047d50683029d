"""``MqttRouter``: a :class:`StreamRouter` on MQTT whose ``subscriber`` and ``publisher``
take MQTT's own options: ``qos``, ``retain`` and ``expiry``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, Unpack

from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.options import split_options
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.mqtt.options import MqttOptions, QoSLevel, qos_of
from fastapi_stream.mqtt.transport import MqttTransport
from fastapi_stream.router import RouterOptions, StreamRouter

__all__ = ["MqttRouter"]

P = ParamSpec("P")
R = TypeVar("R")


class MqttRouterOptions(MqttOptions, RouterOptions, total=False):
    """MqttRouter's keyword arguments."""


class MqttRouter(StreamRouter):
    """A ``StreamRouter`` connected to the MQTT broker at ``url``: keyword arguments are the
    connection's (:class:`~fastapi_stream.mqtt.MqttOptions`) and :class:`StreamRouter`'s."""

    def __init__(
        self, url: str = "mqtt://localhost:1883", **options: Unpack[MqttRouterOptions]
    ) -> None:
        connection, router = split_options(options, MqttOptions.__optional_keys__)
        super().__init__(MqttTransport(url, **connection), **router)

    def subscriber(
        self, channel: str | None = None, *, qos: QoSLevel | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], Endpoint[P, R]]:
        """Consume ``channel``: a topic name, a filter with ``+``/``#`` wildcards, or a
        pattern whose ``{param}`` levels reach the handler (``"sensors/{room}/temp"``).
        ``group=`` makes it a shared subscription (``$share/{group}/...``); ``qos`` is
        the highest QoS the broker uses for it (the router's default when absent).

        Everything else (``group``, ``retry``, ``dead_letter``, ``max_workers``...) is
        :meth:`StreamRouter.subscriber`'s.
        """
        if qos is not None:
            options["qos"] = qos_of({"qos": qos}, qos)
        return super().subscriber(channel, **options)

    def publisher(
        self,
        channel: str | None = None,
        *,
        qos: QoSLevel | None = None,
        retain: bool = False,
        expiry: int | None = None,
        **options: Any,
    ) -> Publisher:
        """A publisher to topic ``channel`` with MQTT's ``qos``, ``retain`` flag and message
        ``expiry`` in seconds (MQTT 5)."""
        if qos is not None:
            options["qos"] = qos_of({"qos": qos}, qos)
        if retain:
            options["retain"] = True
        if expiry is not None:
            options["expiry"] = expiry
        return super().publisher(channel, **options)
