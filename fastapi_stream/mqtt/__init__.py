"""MQTT for fastapi_stream: MQTT 5 (or 3.1.1) on zmqtt (``mqtt://``, ``mqtts://``).

Needs zmqtt: ``pip install "fastapi-stream[mqtt]"``.
"""

try:
    from fastapi_stream.mqtt.transport import MqttTransport
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name is None or exc.name.split(".")[0] != "zmqtt":
        raise
    raise ImportError(
        'fastapi_stream.mqtt needs zmqtt: pip install "fastapi-stream[mqtt]"'
    ) from exc

from fastapi_stream.mqtt.options import (
    MqttOptions,
    MqttPublishOptions,
    MqttSubscriberOptions,
    QoSLevel,
)
from fastapi_stream.mqtt.router import MqttRouter
from fastapi_stream.mqtt.routing import MqttRouting

__all__ = [
    "MqttOptions",
    "MqttPublishOptions",
    "MqttRouter",
    "MqttRouting",
    "MqttSubscriberOptions",
    "MqttTransport",
    "QoSLevel",
]
