"""MQTT options, declared once: the connection's (:class:`MqttOptions`, taken by
``MqttTransport`` and ``MqttRouter``), what ``MqttRouter.subscriber``/``publisher`` take
and what the transport reads from ``spec.options`` and ``message.options``.

* ``qos``: 0, 1 or 2 for a subscriber (the most the broker may use towards it) and for a
  publish; the transport's default (1) when absent;
* ``retain``: the broker keeps the last message of the topic for future subscribers;
* ``expiry``: seconds after which the broker drops an undelivered message (MQTT 5's
  message expiry interval).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from fastapi_stream.core.errors import ConfigurationError

__all__ = [
    "QOS_LEVELS",
    "MqttOptions",
    "MqttPublishOptions",
    "MqttSubscriberOptions",
    "QoSLevel",
    "qos_of",
]

QoSLevel = Literal[0, 1, 2]
QOS_LEVELS: tuple[QoSLevel, ...] = (0, 1, 2)


class MqttOptions(TypedDict, total=False):
    """The connection's options: keyword arguments of ``MqttTransport`` and ``MqttRouter``
    [default]."""

    #: Persistent sessions for every subscriber; replicas need different ids (a pod name)
    #: [the URL's ``?client_id=``, else random ids and clean sessions]
    client_id: str | None
    version: str | None  #: "5.0" or "3.1.1" [the URL's ``?version=``, else "5.0"]
    qos: QoSLevel  #: the default QoS of subscribers and publishes [1]
    session_expiry: int  #: seconds a persistent session outlives its connection [3600]
    keepalive: int  #: seconds [60]
    publish_timeout: float  #: seconds a publish waits for its acknowledgement [5]
    connect_timeout: float  #: [5]
    tls: ssl.SSLContext | None  #: [a default context for ``mqtts://``, else None]


class MqttSubscriberOptions(TypedDict, total=False):
    """What a subscriber passes to the transport in ``options``."""

    #: The highest QoS the broker uses for this subscription's messages.
    qos: QoSLevel


class MqttPublishOptions(TypedDict, total=False):
    """What ``broker.publish(..., **options)`` understands on MQTT."""

    qos: QoSLevel
    #: Keep the message as the topic's retained message.
    retain: bool
    #: Seconds the broker keeps the message for subscribers that are not connected
    #: (MQTT 5 only).
    expiry: int


def qos_of(options: Mapping[str, Any], default: QoSLevel) -> QoSLevel:
    """The ``qos`` in ``options``, checked, else ``default``."""
    qos = options.get("qos", default)
    if qos not in QOS_LEVELS:
        raise ConfigurationError(f"MQTT qos must be 0, 1 or 2, not {qos!r}")
    level: QoSLevel = qos
    return level
