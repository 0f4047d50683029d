"""``mqtt://`` and ``mqtts://`` URLs: what the transport reads from them. No broker."""

from __future__ import annotations

import ssl

import pytest

from fastapi_stream import ConfigurationError, StreamRouter
from fastapi_stream.mqtt import MqttTransport


def test_url_parts() -> None:
    transport = MqttTransport("mqtt://user:p%40ss@broker:1884?client_id=svc-1&version=3.1.1")
    assert (transport.host, transport.port) == ("broker", 1884)
    assert (transport.username, transport.password) == ("user", "p@ss")
    assert transport.client_id == "svc-1"
    assert transport.version == "3.1.1"
    assert transport.tls is None
    assert "p%40ss" not in transport.describe() and "***" in transport.describe()


def test_mqtts_verifies_certificates_on_8883() -> None:
    transport = MqttTransport("mqtts://broker")
    assert transport.port == 8883
    assert isinstance(transport.tls, ssl.SSLContext)
    assert transport.tls.verify_mode is ssl.CERT_REQUIRED
    assert transport.tls.check_hostname


def test_defaults_and_the_scheme_picks_the_transport() -> None:
    router = StreamRouter("mqtt://localhost")
    transport = router.broker.transport
    assert isinstance(transport, MqttTransport)
    assert (transport.port, transport.version, transport.qos, transport.client_id) == (
        1883,
        "5.0",
        1,
        None,
    )


@pytest.mark.parametrize(
    ("url", "options"),
    [("mqtt://h?version=4.0", {}), ("amqp://h", {}), ("mqtt://h", {"qos": 3})],
)
def test_bad_settings_say_what_to_fix(url: str, options: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        MqttTransport(url, **options)  # type: ignore[arg-type]
