"""MQTT's bindings in the AsyncAPI document, valid under the official ``mqtt`` 0.2.0
schemas, in 3.0.0 and 2.6.0 documents. No broker is contacted."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream.asyncapi import get_asyncapi
from fastapi_stream.asyncapi.validate import binding_problems
from fastapi_stream.mqtt import MqttRouter
from tests.asyncapi.checks import assert_valid
from tests.asyncapi.test_bindings import assert_official

VERSIONS = ["3.0.0", "2.6.0"]


class Reading(BaseModel):
    celsius: float


def document(router: MqttRouter, version: str) -> dict[str, Any]:
    app = FastAPI()
    app.include_router(router)
    return assert_valid(get_asyncapi(app, asyncapi_version=version))


@pytest.mark.parametrize("version", VERSIONS)
def test_mqtt_bindings(version: str) -> None:
    router = MqttRouter("mqtt://broker:1883", client_id="svc", qos=2)
    alarms = router.publisher("alarms", qos=1, retain=True, expiry=30)

    @router.subscriber("home/{room}/temp", group="g")
    async def temp(reading: Reading, room: str) -> None:
        await alarms.publish(reading)

    @router.subscriber("home/#", qos=0)
    async def everything(reading: Reading) -> None: ...

    found = document(router, version)
    assert binding_problems(found) == []
    assert_official(found, "mqtt", {"server", "operation", "message"})
    server = found["servers"]["mqtt"]
    assert server["protocol"] == "mqtt"
    assert server["bindings"]["mqtt"] == {
        "cleanSession": False,
        "keepAlive": 60,
        "clientId": "svc",
        "sessionExpiryInterval": 3600,
        "bindingVersion": "0.2.0",
    }
    mqtt = [op["bindings"]["mqtt"] for op in _operations(found, version)]
    receive = {b["x-topic-filter"]: b["qos"] for b in mqtt if "x-topic-filter" in b}
    assert receive == {"$share/g/home/+/temp": 2, "home/#": 0}
    send = [b for b in mqtt if "retain" in b]
    assert send == [
        {"qos": 1, "retain": True, "messageExpiryInterval": 30, "bindingVersion": "0.2.0"}
    ]


def _operations(found: dict[str, Any], version: str) -> list[Any]:
    if version == "3.0.0":
        return list(found["operations"].values())
    return [
        op
        for channel in found["channels"].values()
        for kind in ("publish", "subscribe")
        if (op := channel.get(kind)) is not None
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_mqtt_311_documents_the_envelope(version: str) -> None:
    router = MqttRouter("mqtt://broker:1883", version="3.1.1")

    @router.subscriber("prices")
    async def price(reading: Reading) -> float:
        return reading.celsius

    found = document(router, version)
    assert found["servers"]["mqtt"]["bindings"]["mqtt"]["cleanSession"] is True
    assert "3.1.1" in found["servers"]["mqtt"]["description"]
