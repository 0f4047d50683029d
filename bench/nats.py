"""NATS workloads: core NATS (at-most-once) and a JetStream durable push consumer.

Core NATS keeps nothing for a subscriber that is not there yet, so those runs subscribe
first and time from the first publish (from a second connection) to the last message
handled. JetStream runs store N messages in a fresh stream first and time from the
consumer's start to the last message handled. Request -> reply runs send N requests, one
after another, to a core-NATS responder on the same connection.
"""

from __future__ import annotations

import asyncio
import functools
import time
import warnings
from collections.abc import Awaitable, Callable

import nats
from faststream.nats import JStream, NatsBroker
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

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
from fastapi_stream.nats import NatsRouter

URL = "nats://127.0.0.1:4222"
#: The least requests of a request -> reply run (the calibration grows it to ``--seconds``).
REQUESTS = 1_000


def _headers(i: int) -> dict[str, str]:
    # What both frameworks' producers send: a content type and their ids.
    return {"content-type": "application/json", "message_id": str(i), "correlation_id": str(i)}


async def _publish(nc: Client, subject: str, n: int) -> None:
    for i in range(n):
        await nc.publish(subject, BODY, headers=_headers(i))
    await nc.flush(timeout=int(TIMEOUT))


def _handler(done: Done, out: bool):  # type: ignore[no-untyped-def]
    """The framework handler: a validated ``Order`` in, a ``Receipt`` out when ``out``."""

    async def handle(order: Order) -> Receipt | None:
        done.hit()
        return receipt(order) if out else None

    return handle


# -- core NATS: subscribe, then publish N from another connection ------------------------
# ``prepare(subject, stream, done)``: the clock runs from ``start()`` to the last handled.


async def _core_run(n: int, prepare: Prepare) -> float:
    subject = unique("bench.core")
    done = Done(n)
    publisher = await nats.connect(URL)
    start, close = await prepare(subject, "", done)
    try:
        await start()
        started = time.perf_counter()
        await _publish(publisher, subject, n)
        return await elapsed(started, done)
    finally:
        await close()
        await publisher.close()


# -- JetStream: N stored in a fresh stream, then a durable push consumer -----------------


async def _jetstream_run(n: int, prepare: Prepare) -> float:
    stream = unique("bench-js")
    subject = f"{stream}.orders"
    done = Done(n)
    nc = await nats.connect(URL)
    jsm = nc.jsm()
    try:
        await jsm.add_stream(StreamConfig(name=stream, subjects=[subject]))
        await _publish(nc, subject, n)
        async with asyncio.timeout(TIMEOUT):
            while (await jsm.stream_info(stream)).state.messages < n:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        start, close = await prepare(subject, stream, done)
        try:
            started = time.perf_counter()
            await start()
            return await elapsed(started, done)
        finally:
            await close()
    finally:
        await jsm.delete_stream(stream)
        await nc.close()


# -- the three implementations, for either kind of run -----------------------------------


def raw(*, out: bool) -> Prepare:
    """nats-py: a callback subscription; JetStream messages acked one by one."""

    async def prepare(subject: str, stream: str, done: Done) -> tuple[Start, Start]:
        nc = await nats.connect(URL)
        out_subject = unique("bench.out")

        async def handle(msg: Msg) -> None:
            order = Order.model_validate_json(msg.data)
            if out:
                await nc.publish(out_subject, receipt(order).model_dump_json().encode())
            if stream:
                await msg.ack()
            done.hit()

        async def start() -> None:
            if stream:
                js = nc.jetstream()
                await js.subscribe(
                    subject, stream=stream, durable="bench", cb=handle, manual_ack=True
                )
            else:
                await nc.subscribe(subject, cb=handle)
                await nc.flush()

        return start, nc.close

    return prepare


def faststream(*, out: bool) -> Prepare:
    async def prepare(subject: str, stream: str, done: Done) -> tuple[Start, Start]:
        broker = NatsBroker(URL, logger=None)
        handle = _handler(done, out)
        if out:
            handle = broker.publisher(unique("bench.out"))(handle)
        if stream:
            with warnings.catch_warnings():  # it advises a queue group for push durables
                warnings.simplefilter("ignore", RuntimeWarning)
                broker.subscriber(subject, stream=JStream(stream, declare=False), durable="bench")(
                    handle
                )
        else:
            broker.subscriber(subject)(handle)
        await broker.connect()
        return broker.start, broker.stop

    return prepare


def ours(*, out: bool) -> Prepare:
    async def prepare(subject: str, stream: str, done: Done) -> tuple[Start, Start]:
        router = NatsRouter(URL)
        handle = _handler(done, out)
        if out:
            handle = router.publisher(unique("bench.out"))(handle)
        if stream:
            router.subscriber(subject, stream=stream, durable="bench")(handle)
        else:
            router.subscriber(subject)(handle)
        await router.broker.connect()
        return router.broker.start, router.broker.close

    return prepare


def _three(
    run: Callable[[int, Prepare], Awaitable[float]], *, out: bool = False
) -> dict[str, Implementation]:
    return {
        name: functools.partial(run, prepare=make(out=out))
        for name, make in ((RAW, raw), (FASTSTREAM, faststream), (OURS, ours))
    }


# -- request -> reply: N requests, one after another, to a core-NATS responder ----------


async def raw_serve(subject: str) -> tuple[Request, Start]:
    """nats-py: ``nc.request`` (one inbox subscription for all requests) against a
    callback subscription answering with ``msg.respond``."""
    nc = await nats.connect(URL)

    async def answer(msg: Msg) -> None:
        order = Order.model_validate_json(msg.data)
        await msg.respond(receipt(order).model_dump_json().encode())

    await nc.subscribe(subject, cb=answer)

    async def request() -> bytes:
        return (await nc.request(subject, BODY, timeout=TIMEOUT)).data

    return request, nc.close


async def faststream_serve(subject: str) -> tuple[Request, Start]:
    broker = NatsBroker(URL, logger=None)
    return await framework_responder(broker, broker.subscriber(subject), subject, broker.stop)


async def ours_serve(subject: str) -> tuple[Request, Start]:
    router = NatsRouter(URL)
    return await framework_responder(
        router.broker, router.subscriber(subject), subject, router.broker.close
    )


def workloads() -> list[Workload]:
    return [
        Workload("NATS core", "consume -> validate -> ack", _three(_core_run)),
        Workload("NATS core", "consume -> validate -> publish", _three(_core_run, out=True)),
        Workload(
            "NATS core",
            "request -> reply round trip",
            request_replies(
                {RAW: raw_serve, FASTSTREAM: faststream_serve, OURS: ours_serve}, fresh("bench.rpc")
            ),
            unit="req/s",
            least=REQUESTS,
        ),
        Workload("NATS JetStream push", "consume -> validate -> ack", _three(_jetstream_run)),
        Workload(
            "NATS JetStream push",
            "consume -> validate -> publish",
            _three(_jetstream_run, out=True),
        ),
    ]
