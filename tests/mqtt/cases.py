"""The MQTT transport of the conformance suite, on the shared Mosquitto (MQTT 5).

Every router of a test connects with the same ``client_id`` (made of the test's
namespace), so a subscriber that comes back after a stop resumes its persistent session:
what it left unacknowledged, and what its shared subscription received meanwhile, is
delivered to it. Levels are separated by ``/``.
"""

from __future__ import annotations

from fastapi_stream.mqtt import MqttTransport
from tests.conformance.conftest import Features, TransportCase

MQTT_URL = "mqtt://127.0.0.1:1883"

MQTT = TransportCase(
    "mqtt",
    connect=lambda namespace: MqttTransport(
        MQTT_URL, client_id=f"fs-{namespace[-16:]}", session_expiry=300
    ),
    features=Features(),
    separator="/",
    wait_timeout=5.0,
    quiet_period=0.2,
)
