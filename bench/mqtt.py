"""MQTT workloads on the shared Mosquitto (MQTT 5, QoS 1).

Mosquitto keeps nothing for a subscriber that is not there, and at most 1000 queued
messages for one that is, so each run subscribes first, then a publisher of its own
(zmqtt, 20 publishes in flight: Mosquitto's ``max_inflight_messages``) sends N messages
at QoS 1, never more than ``WINDOW`` ahead of the consumer. The clock runs from the first
publish to the last message handled; the publisher's work is the same for every
implementation.

* raw aiomqtt: ``async for message in client.messages``, validated; paho acknowledges
  each message when it arrives (aiomqtt has no manual ack), results are published
  without waiting for each PUBACK;
* FastStream's ``MQTTBroker`` (zmqtt) with ``qos=1``: acks after the handler;
* fastapi_stream's ``MqttRouter`` (zmqtt): acks after the handler.

Request -> reply runs send N requests, one after another, to a responder in the same
process, with MQTT 5's response topic and correlation data (the raw loop at QoS 0, see
:func:`raw_serve`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import uuid
from typing import Any

import aiomqtt
import zmqtt
from faststream.mqtt import MQTTBroker
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import (
    BODY,
    TIMEOUT,
    Done,
    Order,
    Prepare,
    Receipt,
    Request,
    Start,
    elapsed,
    framework_responder,
    fresh,
    receipt,
    request_replies,
    unique,
)
from bench.harness import FASTSTREAM, OURS, RAW, Implementation, Workload
from fastapi_stream.mqtt import MqttRouter

HOST, PORT = "127.0.0.1", 1883
URL = f"mqtt://{HOST}:{PORT}"
#: Publishes in flight at once (Mosquitto's default ``max_inflight_messages``).
IN_FLIGHT = 20
#: The most messages published and not yet handled (Mosquitto queues 1000 per client).
WINDOW = 500
#: aiomqtt warns about every publish waiting for its PUBACK beyond ten: expected here.
_QUIET = logging.getLogger("bench.aiomqtt")
_QUIET.setLevel(logging.ERROR)
#: The least requests of a request -> reply run (the calibration grows it to ``--seconds``).
REQUESTS = 1_000


def _aiomqtt() -> aiomqtt.Client:
    """An aiomqtt client as one would write it for speed: MQTT 5, Nagle off (paho leaves
    it on, which costs a request -> reply round trip some 80 ms)."""
    return aiomqtt.Client(
        HOST,
        PORT,
        protocol=aiomqtt.ProtocolVersion.V5,
        logger=_QUIET,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


def _properties(**values: Any) -> Any:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


async def _publish(topic: str, n: int, done: Done) -> None:
    """N QoS 1 messages as both frameworks' producers send them (content type and a
    message id), ``IN_FLIGHT`` at a time, at most ``WINDOW`` ahead of the consumer."""
    sent = 0

    async def publisher(client: zmqtt.MQTTClient, count: int) -> None:
        nonlocal sent
        for _ in range(count):
            while sent - done.count >= WINDOW:  # noqa: ASYNC110 - polled, off the hot path
                await asyncio.sleep(0.0005)
            sent += 1
            props = zmqtt.PublishProperties(
                content_type="application/json",
                user_properties=(("message_id", uuid.uuid4().hex),),
            )
            await client.publish(topic, BODY, qos=zmqtt.QoS.AT_LEAST_ONCE, properties=props)

    async with zmqtt.MQTTClient(HOST, PORT, version="5.0") as client:
        share, rest = divmod(n, IN_FLIGHT)
        await asyncio.gather(*(publisher(client, share + (i < rest)) for i in range(IN_FLIGHT)))


async def _run(n: int, *, prepare: Prepare, out: bool) -> float:
    topic = unique("bench/orders")
    done = Done(n)
    start, close = await prepare(topic, unique("bench/out") if out else "", done)
    try:
        await start()
        started = time.perf_counter()
        await _publish(topic, n, done)
        return await elapsed(started, done)
    finally:
        await close()


def _handler(done: Done, out: bool):  # type: ignore[no-untyped-def]
    async def handle(order: Order) -> Receipt | None:
        done.hit()
        return receipt(order) if out else None

    return handle


# -- the three implementations -------------------------------------------------------------


async def raw(topic: str, out: str, done: Done) -> tuple[Start, Start]:
    client = _aiomqtt()
    await client.__aenter__()
    await client.subscribe(topic, qos=1)
    pending: list[asyncio.Future[None]] = []

    async def consume() -> None:
        async for message in client.messages:
            order = Order.model_validate_json(message.payload)
            if out:
                body = receipt(order).model_dump_json()
                pending.append(asyncio.ensure_future(client.publish(out, body, qos=1)))
                if len(pending) >= 100:
                    await asyncio.gather(*pending)
                    pending.clear()
            done.hit()
            if done.count >= done.n:
                await asyncio.gather(*pending)
                return

    task: list[asyncio.Task[None]] = []

    async def start() -> None:
        task.append(asyncio.create_task(consume()))

    async def close() -> None:
        for t in task:
            t.cancel()
        await asyncio.gather(*task, return_exceptions=True)
        await client.__aexit__(None, None, None)

    return start, close


async def faststream(topic: str, out: str, done: Done) -> tuple[Start, Start]:
    broker = MQTTBroker(URL, logger=None)
    handle = _handler(done, bool(out))
    if out:
        handle = broker.publisher(out, qos=zmqtt.QoS.AT_LEAST_ONCE)(handle)
    broker.subscriber(topic, qos=zmqtt.QoS.AT_LEAST_ONCE)(handle)
    await broker.start()

    async def started() -> None:
        return None

    return started, broker.stop


async def ours(topic: str, out: str, done: Done) -> tuple[Start, Start]:
    router = MqttRouter(URL)
    handle = _handler(done, bool(out))
    if out:
        handle = router.publisher(out)(handle)
    router.subscriber(topic)(handle)
    await router.broker.start()

    async def started() -> None:
        return None

    return started, router.broker.close


def _three(*, out: bool = False) -> dict[str, Implementation]:
    return {
        name: functools.partial(_run, prepare=prepare, out=out)
        for name, prepare in ((RAW, raw), (FASTSTREAM, faststream), (OURS, ours))
    }


# -- request -> reply: N requests, one after another ---------------------------------------


async def raw_serve(topic: str) -> tuple[Request, Start]:
    """aiomqtt: a responder connection answering to each request's response topic with
    its correlation data, and a requester connection subscribed to its own reply topic
    (one request at a time: the reply needs no lookup).

    Requests and replies go at QoS 0: a raw client that sends its request at QoS 1 gets
    the PUBACK and, right after it, the reply, which Mosquitto holds back (Nagle: its
    ``set_tcp_nodelay`` is off by default) until the client's delayed TCP acknowledgement,
    some 40 ms per request. The frameworks send both at QoS 1."""
    responder = _aiomqtt()
    requester = _aiomqtt()
    await responder.__aenter__()
    await requester.__aenter__()
    replies = f"{topic}/reply"
    await responder.subscribe(topic, qos=1)
    await requester.subscribe(replies, qos=1)
    messages = requester.messages.__aiter__()

    async def answer() -> None:
        async for message in responder.messages:
            order = Order.model_validate_json(message.payload)
            asked: Any = message.properties
            await responder.publish(
                asked.ResponseTopic,
                receipt(order).model_dump_json(),
                qos=0,
                properties=_properties(CorrelationData=asked.CorrelationData),
            )

    task = asyncio.create_task(answer())
    count = 0

    async def request() -> bytes:
        nonlocal count
        count += 1
        props = _properties(ResponseTopic=replies, CorrelationData=str(count).encode())
        await requester.publish(topic, BODY, qos=0, properties=props)
        async with asyncio.timeout(TIMEOUT):
            reply = await anext(messages)
        return bytes(reply.payload)

    async def close() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await requester.__aexit__(None, None, None)
        await responder.__aexit__(None, None, None)

    return request, close


async def faststream_serve(topic: str) -> tuple[Request, Start]:
    broker = MQTTBroker(URL, logger=None)
    return await framework_responder(
        broker, broker.subscriber(topic, qos=zmqtt.QoS.AT_LEAST_ONCE), topic, broker.stop
    )


async def ours_serve(topic: str) -> tuple[Request, Start]:
    router = MqttRouter(URL)
    return await framework_responder(
        router.broker, router.subscriber(topic), topic, router.broker.close
    )


def workloads() -> list[Workload]:
    return [
        Workload("MQTT (QoS 1)", "consume -> validate -> ack", _three()),
        Workload("MQTT (QoS 1)", "consume -> validate -> publish", _three(out=True)),
        Workload(
            "MQTT (QoS 1)",
            "request -> reply round trip",
            request_replies(
                {RAW: raw_serve, FASTSTREAM: faststream_serve, OURS: ours_serve}, fresh("bench/rpc")
            ),
            unit="req/s",
            least=REQUESTS,
        ),
    ]
