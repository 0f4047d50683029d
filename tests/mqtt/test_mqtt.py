"""MQTT-only behaviour against the real Mosquitto on 127.0.0.1:1883 (MQTT 5), and against
a Mosquitto of the test's own on 1885 for a broker restart: interop with a client of
another library both ways, shared subscriptions, QoS levels, retained messages,
persistent sessions across a killed consumer process, request/reply, MQTT 3.1.1.

No ``from __future__ import annotations``: handlers' annotations are read at registration.
"""

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from fastapi_stream import Backoff, PublishError, Retry, StreamMessage
from fastapi_stream.core.envelope import ENVELOPE_PREFIX
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.mqtt import MqttRouter, MqttTransport
from fastapi_stream.testing import TestStreamBroker
from tests.waiting import eventually

from .conftest import URL, Mosquitto

pytestmark = [pytest.mark.anyio, pytest.mark.mqtt]

REPO = Path(__file__).resolve().parents[2]


class Reading(BaseModel):
    room: str
    celsius: float


# -- interop with a plain client --------------------------------------------------------


async def test_plain_client_publish_is_consumed_and_validated(
    uid: str, raw: aiomqtt.Client
) -> None:
    router = MqttRouter(URL)
    got: list[tuple[Reading, str, StreamMessage]] = []

    @router.subscriber(f"test/{uid}/sensors/{{room}}")
    async def record(reading: Reading, room: str, msg: StreamMessage) -> None:
        got.append((reading, room, msg))

    async with router.broker:
        props = publish_properties()
        props.UserProperty = [("source", "raw")]
        props.ContentType = "application/json"
        await raw.publish(
            f"test/{uid}/sensors/kitchen",
            json.dumps({"room": "kitchen", "celsius": 21.5}),
            qos=1,
            properties=props,
        )
        await raw.publish(f"test/{uid}/sensors/hall", b'{"room": "hall", "celsius": 19}', qos=1)
        await eventually(lambda: len(got) == 2, "both readings")

    (first, room, msg), (second, room2, _) = got
    assert first == Reading(room="kitchen", celsius=21.5)
    assert room == "kitchen"
    assert msg.headers == {"source": "raw"}
    assert msg.content_type == "application/json"
    assert (second, room2) == (Reading(room="hall", celsius=19), "hall")


async def test_what_is_published_is_readable_by_a_plain_client(
    uid: str, raw: aiomqtt.Client
) -> None:
    topic = f"test/{uid}/out"
    await raw.subscribe(topic, qos=1)
    router = MqttRouter(URL)
    async with router.broker as broker:
        await broker.publish(
            {"room": "attic", "celsius": 30},
            topic,
            headers={"trace": "abc"},
            correlation_id="corr-1",
            reply_to=f"test/{uid}/answers",
        )
        async with asyncio.timeout(5):
            message = await anext(aiomqtt_messages(raw))

    assert json.loads(message.payload) == {"room": "attic", "celsius": 30}
    assert message.qos == 1
    props: Any = message.properties
    assert props is not None
    assert props.ContentType == "application/json"
    assert props.CorrelationData == b"corr-1"
    assert props.ResponseTopic == f"test/{uid}/answers"
    user = dict(props.UserProperty)
    assert user["trace"] == "abc"
    assert len(user["message_id"]) == 32


def aiomqtt_messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    return client.messages.__aiter__()


def publish_properties() -> Any:
    """paho's PUBLISH properties (untyped: its attributes are set by name)."""
    return Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


async def test_plain_responder_answers_a_request(uid: str, raw: aiomqtt.Client) -> None:
    """Request/reply on MQTT 5: response topic and correlation data, per requester."""
    topic = f"test/{uid}/price"
    await raw.subscribe(topic, qos=1)

    async def respond() -> None:
        async for request in raw.messages:
            props, asked = publish_properties(), request.properties
            assert asked is not None
            props.CorrelationData = getattr(asked, "CorrelationData")  # noqa: B009 - untyped
            answer_to = getattr(asked, "ResponseTopic")  # noqa: B009 - untyped
            await raw.publish(answer_to, b"0.75", qos=1, properties=props)

    responder = asyncio.create_task(respond())
    first, second = MqttRouter(URL), MqttRouter(URL)
    try:
        async with first.broker as one, second.broker as two:
            a, b = await asyncio.gather(
                one.request("pear", topic, timeout=5), two.request("fig", topic, timeout=5)
            )
    finally:
        responder.cancel()
        await asyncio.gather(responder, return_exceptions=True)
    assert a.decode() == b.decode() == 0.75
    assert a.channel != b.channel  # a response topic per requester


async def test_request_reply_between_routers(uid: str) -> None:
    server, client = MqttRouter(URL), MqttRouter(URL)

    @server.subscriber(f"test/{uid}/double")
    async def double(n: int) -> int:
        return 2 * n

    async with server.broker, client.broker as broker:
        replies = await asyncio.gather(
            *(broker.request(n, f"test/{uid}/double", timeout=5) for n in range(5))
        )
    assert [reply.decode() for reply in replies] == [0, 2, 4, 6, 8]


# -- groups, QoS, retain ----------------------------------------------------------------


async def test_shared_subscription_splits_the_work(uid: str) -> None:
    topic = f"test/{uid}/jobs"
    handled: list[tuple[str, int]] = []
    first, second = MqttRouter(URL), MqttRouter(URL)

    @first.subscriber(topic, group="workers")
    async def work_a(n: int) -> None:
        handled.append(("a", n))
        await asyncio.sleep(0.005)

    @second.subscriber(topic, group="workers")
    async def work_b(n: int) -> None:
        handled.append(("b", n))
        await asyncio.sleep(0.005)

    publisher = MqttRouter(URL)
    async with first.broker, second.broker, publisher.broker as broker:
        for n in range(40):
            await broker.publish(n, topic)
        await eventually(lambda: len(handled) >= 40, "40 jobs")
        await asyncio.sleep(0.2)

    assert sorted(n for _, n in handled) == list(range(40)), "lost or duplicated"
    assert {who for who, _ in handled} == {"a", "b"}


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_qos_levels(uid: str, qos: int, raw: aiomqtt.Client) -> None:
    topic = f"test/{uid}/qos"
    await raw.subscribe(topic, qos=2)
    router = MqttRouter(URL)
    got: list[StreamMessage] = []

    @router.subscriber(topic, qos=qos)  # type: ignore[arg-type]
    async def handle(msg: StreamMessage) -> None:
        got.append(msg)

    pub = router.publisher(topic, qos=qos)  # type: ignore[arg-type]
    async with router.broker:
        for n in range(10):
            await pub.publish(n)
        await eventually(lambda: len(got) == 10, "10 messages")
        async with asyncio.timeout(5):
            seen = await anext(aiomqtt_messages(raw))
    assert [m.decode() for m in got] == list(range(10))
    assert {m.raw_message.qos for m in got} == {qos}
    assert seen.qos == qos


async def test_retained_message_reaches_a_later_subscriber(uid: str) -> None:
    """At every start, a persistent session's too, a subscriber gets the retained state."""
    topic = f"test/{uid}/state"
    router = MqttRouter(URL)
    async with router.broker as broker:
        await broker.publish({"on": True}, topic, retain=True, expiry=60)

    got: list[StreamMessage] = []
    for _ in range(2):  # the second start resumes the session
        later = MqttRouter(URL, client_id=f"fs-retain-{uid}", session_expiry=60)

        @later.subscriber(topic)
        async def state(msg: StreamMessage) -> None:
            got.append(msg)

        async with later.broker:
            await eventually(lambda: got, "the retained message")
            await asyncio.sleep(0.1)
        assert [m.decode() for m in got] == [{"on": True}]
        assert got.pop().raw_message.retain is True

    async with router.broker as broker:
        await broker.publish(b"", topic, retain=True)  # clears it


async def test_nack_redelivers_in_process_without_acking(uid: str) -> None:
    router = MqttRouter(URL)
    attempts: list[int] = []

    @router.subscriber(f"test/{uid}/flaky")
    async def flaky(n: int, msg: StreamMessage) -> None:
        attempts.append(n)
        if len(attempts) < 3:
            await msg.nack()

    async with router.broker as broker:
        await broker.publish(7, f"test/{uid}/flaky")
        await eventually(lambda: len(attempts) >= 3, "three deliveries")
        await asyncio.sleep(0.2)
    assert attempts == [7, 7, 7]


# -- MQTT 3.1.1 ---------------------------------------------------------------------------


async def test_mqtt_311_carries_metadata_in_the_envelope(uid: str) -> None:
    topic = f"test/{uid}/v3"
    router = MqttRouter(URL, version="3.1.1")
    got: list[StreamMessage] = []

    @router.subscriber(topic)
    async def handle(msg: StreamMessage) -> str:
        got.append(msg)
        return "pong"

    async with aiomqtt.Client("127.0.0.1", 1883) as raw:  # MQTT 3.1.1, no properties
        await raw.subscribe(topic, qos=1)
        async with router.broker as broker:
            reply = await broker.request("ping", topic, headers={"k": "v"}, timeout=5)
            async with asyncio.timeout(5):
                wire = await anext(aiomqtt_messages(raw))
            # Another producer writes the envelope by hand.
            meta = {"message_id": "m-1", "headers": {"from": "raw"}}
            await raw.publish(topic, ENVELOPE_PREFIX + json.dumps(meta).encode() + b'\n"hi"')
            await eventually(lambda: len(got) == 2, "the hand-made envelope")

    assert reply.decode() == "pong"
    assert bytes(wire.payload).startswith(ENVELOPE_PREFIX)
    assert got[0].headers == {"k": "v"}
    assert (got[1].message_id, got[1].headers, got[1].decode()) == ("m-1", {"from": "raw"}, "hi")


# -- failures and recovery ----------------------------------------------------------------


async def test_consumer_killed_mid_handler_gets_its_message_again(uid: str, tmp_path: Path) -> None:
    """QoS 1 with a persistent session: the PUBACK goes out only after the handler, so a
    process killed inside it leaves the message with the broker, which delivers it to the
    same client id when it is back."""
    topic, client_id, marker = f"test/{uid}/killed", f"fs-kill-{uid}", tmp_path / "marker"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.mqtt.consumer", URL, client_id, topic, str(marker)),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        await eventually(lambda: marker.exists() and marker.read_text() == "ready", "ready", 15)
        publisher = MqttRouter(URL)
        async with publisher.broker as broker:
            await broker.publish(42, topic)
        await eventually(lambda: marker.read_text() == "started 42", "the handler to start")
    finally:
        process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)

    again = MqttRouter(URL, client_id=client_id, session_expiry=60)
    got: list[int] = []

    @again.subscriber(topic, group="killed")
    async def handle(n: int) -> None:
        got.append(n)

    async with again.broker:
        await eventually(lambda: got, "the message again", 10)
        await asyncio.sleep(0.2)
    assert got == [42]


async def test_broker_restart_is_survived(uid: str, mosquitto: Mosquitto) -> None:
    """Mosquitto killed (SIGKILL) and started again: publishing raises within the timeout
    meanwhile, readiness says so, and every QoS 1 message published once it is back is
    consumed (lost 0)."""
    topic = f"test/{uid}/restart"
    router = MqttRouter(
        mosquitto.url,
        client_id=f"fs-restart-{uid}",
        publish_timeout=1.0,
        connect_timeout=1.0,
        reconnect=Backoff(first=0.05, cap=0.5),
    )
    got: list[int] = []

    @router.subscriber(topic)
    async def handle(n: int) -> None:
        got.append(n)

    async with router.broker as broker:
        await broker.publish(0, topic)
        await eventually(lambda: got == [0], "the first message")
        subscribed = time.time()
        # The broker saves its sessions every second or two: wait for a save with ours.
        await eventually(lambda: mosquitto.saved_since(subscribed + 0.1), "a save", 5)
        mosquitto.kill()

        started = time.monotonic()
        with pytest.raises(PublishError):
            await broker.publish(-1, topic)
        assert time.monotonic() - started < 2.5
        assert not await broker.transport.ping(0.5)

        mosquitto.start()
        await eventually(lambda: broker.transport.ping(0.5), "readiness again", 10)
        for n in range(1, 101):
            await broker.publish(n, topic)
        await eventually(lambda: len(set(got)) >= 101, "every message after the restart", 15)
    assert set(got) == set(range(101)), f"lost {sorted(set(range(101)) - set(got))}"


async def test_publish_without_broker_raises_within_timeout() -> None:
    transport = MqttTransport("mqtt://127.0.0.1:1", publish_timeout=0.5, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(PublishError):
        await transport.publish(OutgoingMessage("x", b""))
    assert time.monotonic() - started < 1.5
    assert not await transport.ping(0.3)
    await transport.close()


# -- the test broker ---------------------------------------------------------------------


async def test_test_broker_routes_like_mqtt() -> None:
    router = MqttRouter(URL)
    seen: list[tuple[str, str]] = []

    @router.subscriber("home/{room}/temp")
    async def temp(room: str, msg: StreamMessage) -> None:
        seen.append(("temp", room))

    @router.subscriber("home/#")
    async def everything(msg: StreamMessage) -> None:
        seen.append(("all", msg.channel))

    @router.subscriber("home/+/temp", group="g")
    async def shared_a(msg: StreamMessage) -> None:
        seen.append(("shared", msg.channel))

    @router.subscriber("home/+/temp", group="g")
    async def shared_b(msg: StreamMessage) -> None:
        seen.append(("shared", msg.channel))

    async with TestStreamBroker(router) as broker:
        await broker.publish(1, "home/kitchen/temp")
        await broker.publish(2, "home")
        await broker.publish(3, "$SYS/home")

    assert sorted(seen) == sorted(
        [
            ("temp", "kitchen"),
            ("all", "home/kitchen/temp"),
            ("shared", "home/kitchen/temp"),
            ("all", "home"),
        ]
    )


async def test_a_plain_message_without_id_is_retried(uid: str, raw: aiomqtt.Client) -> None:
    router = MqttRouter(URL)
    ids: list[str | None] = []

    @router.subscriber(f"test/{uid}/plain", retry=Retry(max_attempts=3, backoff=0.01))
    async def fail(msg: StreamMessage) -> None:
        ids.append(msg.message_id)
        raise RuntimeError("boom")

    async with router.broker:
        await raw.publish(f"test/{uid}/plain", b"1", qos=1)
        await eventually(lambda: len(ids) >= 3, "three attempts")
        await asyncio.sleep(0.2)
    assert len(ids) == 3
    assert len(set(ids)) == 1 and ids[0]


async def test_a_burst_is_consumed_without_reconnecting(
    uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto 2.0.11 sends one message over the receive maximum under load; the
    subscriber takes it instead of dropping the connection (and what it held).

    Each burst stays under Mosquitto's default ``max_queued_messages`` (1000): beyond it
    the broker itself drops messages for a subscriber that falls behind (docs/mqtt.md),
    which on a loaded machine it did."""
    topic = f"test/{uid}/burst"
    router = MqttRouter(URL)
    got: list[int] = []

    @router.subscriber(topic, prefetch=10)
    async def handle(n: int) -> None:
        got.append(n)

    publisher = MqttRouter(URL)
    async with router.broker, publisher.broker as broker:
        for burst in range(0, 2000, 800):
            for start in range(burst, min(burst + 800, 2000), 100):
                await asyncio.gather(*(broker.publish(n, topic) for n in range(start, start + 100)))
            expected = min(burst + 800, 2000)
            await eventually(lambda n=expected: len(got) >= n, f"{expected} messages", 20)
    assert sorted(got) == list(range(2000))
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
