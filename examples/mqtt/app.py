"""MQTT: sensor readings by room, a shared subscription, QoS, retained state, request/reply.

Every section between ``--8<--`` markers is shown in ``docs/mqtt.md``;
``tests/examples/test_mqtt.py`` runs each of them, on the test broker and on Mosquitto.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import Retry
from fastapi_stream.mqtt import MqttRouter

# --8<-- [start:router]
# A fixed client_id gives each subscriber a persistent session: what it had not
# acknowledged when the process stopped or died is delivered to it again.
router = MqttRouter("mqtt://localhost:1883", client_id="thermostat")
# --8<-- [end:router]


class Reading(BaseModel):
    celsius: float


# --8<-- [start:readings]
heating: list[tuple[str, bool]] = []
status = router.publisher("home/status", retain=True)  # the last one is kept for newcomers


# "{room}" fills one topic level: the subscription is "$share/thermostats/home/+/temp"
# and the handler gets room="kitchen" for "home/kitchen/temp". Replicas of this service
# share the group and split the readings. The PUBACK goes out after the handler (QoS 1).
@router.subscriber("home/{room}/temp", group="thermostats", retry=Retry(max_attempts=3))
async def regulate(reading: Reading, room: str) -> None:
    on = reading.celsius < 19.0
    heating.append((room, on))
    await status.publish({"room": room, "heating": on})


@router.post("/rooms/{room}/temp")
async def report(room: str, reading: Reading) -> dict[str, str]:
    await router.broker.publish(reading, f"home/{room}/temp", qos=1)
    return {"reported": room}


# --8<-- [end:readings]


# --8<-- [start:request]
SETPOINTS = {"kitchen": 20.5, "bedroom": 18.0}


@router.subscriber("home/setpoint")
async def setpoint(room: str) -> float:
    return SETPOINTS.get(room, 19.0)


async def ask_setpoint(room: str) -> float:
    """MQTT 5 request/reply: a response topic of this process, correlation data."""
    reply = await router.broker.request(room, "home/setpoint", timeout=2.0)
    return float(reply.decode())


# --8<-- [end:request]


app = FastAPI(title="fastapi-stream MQTT example")
app.include_router(router)
