"""The consume loop's rules, on a scripted transport whose failures the tests choose."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from fastapi_stream import (
    Backoff,
    OutgoingMessage,
    PublishError,
    Retry,
    StreamMessage,
    StreamRouter,
    Subscription,
    SubscriptionSpec,
    Transport,
    TransportError,
)
from fastapi_stream.core.transport import Deliver
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

FAST = Backoff(first=0.01, cap=0.05)


class Scripted(Subscription):
    """A subscription that records what the core asks of it and fails when told to."""

    keepalive_interval = 0.02

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.queue: asyncio.Queue[StreamMessage] = asyncio.Queue()
        self.fetch_failures = 0
        self.redeliver_failures = 0
        self.settle_failures = 0
        self.keepalives = 0
        self.attempts: dict[str, int] = {}

    def put(self, body: bytes, message_id: str) -> None:
        attempt = self.attempts[message_id] = self.attempts.get(message_id, 0) + 1
        message = StreamMessage(
            body, channel="jobs", message_id=message_id, delivery_attempt=attempt
        )
        self.queue.put_nowait(message)

    async def fetch(self, limit: int) -> Sequence[StreamMessage]:
        if self.fetch_failures:
            self.fetch_failures -= 1
            raise ConnectionError("the broker went away")
        try:
            first = await asyncio.wait_for(self.queue.get(), 0.2)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < limit and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        if self.settle_failures:
            self.settle_failures -= 1
            raise ConnectionError("the acks did not get through")
        self.events += [f"ack {m.message_id}" for m in acked]
        self.events += [f"reject {m.message_id}" for m in rejected]

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        if self.redeliver_failures:
            self.redeliver_failures -= 1
            raise ConnectionError("cannot redeliver now")
        for message in messages:
            self.events.append(f"redeliver {message.message_id}")
            self.put(message.body, str(message.message_id))

    async def keepalive(self) -> None:
        self.keepalives += 1

    async def close(self) -> None:
        self.events.append("close")


class ScriptedTransport(Transport):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.subscription = Scripted(self.events)
        self.connect_failures = 0
        self.publish_many_failures = 0
        self.connected = False

    async def connect(self) -> None:
        if self.connect_failures:
            self.connect_failures -= 1
            raise TransportError("nobody answers on scripted://")
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def ping(self, timeout: float) -> bool:
        return self.connected

    async def publish(self, message: OutgoingMessage) -> None:
        self.events.append(f"publish {message.body.decode()}")

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.publish_many_failures:
            self.publish_many_failures -= 1
            raise PublishError("results not confirmed")
        self.events.append(f"publish_many {[m.body.decode() for m in messages]}")

    async def request(self, message: OutgoingMessage, timeout: float) -> StreamMessage:
        raise NotImplementedError

    async def subscribe(self, spec: SubscriptionSpec, deliver: Deliver) -> Subscription:
        return self.subscription


def _router(transport: ScriptedTransport, **options: object) -> StreamRouter:
    return StreamRouter(transport, reconnect=FAST, **options)  # type: ignore[arg-type]


async def test_results_go_out_together_before_the_delivery_is_settled() -> None:
    transport = ScriptedTransport()
    router = _router(transport)

    @router.subscriber("jobs")
    @router.publisher("done")
    async def handle(n: int) -> int:
        return n * 10

    async with router.broker:
        for n in (1, 2, 3):
            transport.subscription.put(str(n).encode(), f"m{n}")
        await eventually(lambda: "ack m3" in transport.events, "the acks")
    # One fetch brought the three: one publish_many, then their acks.
    assert transport.events[:4] == ["publish_many ['10', '20', '30']", "ack m1", "ack m2", "ack m3"]


class SettlesEach(Scripted):
    settle_each = True


async def test_a_subscription_settling_each_message_gets_each_ack_as_it_finishes() -> None:
    """``Subscription.settle_each`` (Kafka): the acks of a delivery handled inline go out
    as its messages finish, so a consumer killed mid-delivery hands out again only what
    was not committed yet, not the whole delivery."""
    transport = ScriptedTransport()
    transport.subscription = SettlesEach(transport.events)
    router = _router(transport)

    @router.subscriber("jobs")
    async def handle(n: int) -> None:
        transport.events.append(f"handle {n}")

    async with router.broker:
        for n in (1, 2, 3):
            transport.subscription.put(str(n).encode(), f"m{n}")
        await eventually(lambda: "ack m3" in transport.events, "the acks")
    expected = ["handle 1", "ack m1", "handle 2", "ack m2", "handle 3", "ack m3"]
    assert transport.events[:6] == expected


async def test_a_subscription_settling_each_message_still_gets_results_out_first() -> None:
    transport = ScriptedTransport()
    transport.subscription = SettlesEach(transport.events)
    router = _router(transport)

    @router.subscriber("jobs")
    @router.publisher("done")
    async def handle(n: int) -> int:
        return n * 10

    async with router.broker:
        for n in (1, 2, 3):
            transport.subscription.put(str(n).encode(), f"m{n}")
        await eventually(lambda: "ack m3" in transport.events, "the acks")
    assert transport.events[:4] == ["publish_many ['10', '20', '30']", "ack m1", "ack m2", "ack m3"]


async def test_results_not_confirmed_mean_the_messages_are_handled_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fastapi_stream.core.consume.RESULTS_RETRY_DELAY", 0.05)
    transport = ScriptedTransport()
    transport.publish_many_failures = 1
    router = _router(transport)
    handled: list[int] = []

    @router.subscriber("jobs")
    @router.publisher("done")
    async def handle(n: int) -> int:
        handled.append(n)
        return n

    async with router.broker:
        transport.subscription.put(b"7", "m7")
        await eventually(lambda: "ack m7" in transport.events, "the ack after the retry")
    assert handled == [7, 7]
    assert transport.events == ["redeliver m7", "publish_many ['7']", "ack m7", "close"]
    assert "handled again" in caplog.text


async def test_fetch_failures_back_off_with_one_line_each_and_one_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = ScriptedTransport()
    transport.subscription.fetch_failures = 3
    router = _router(transport)
    handled: list[int] = []

    @router.subscriber("jobs")
    async def handle(n: int) -> None:
        handled.append(n)

    with caplog.at_level(logging.INFO, "fastapi_stream"):
        async with router.broker:
            transport.subscription.put(b"1", "m1")
            await eventually(lambda: handled == [1], "the message after the broker is back")
    waits = [r for r in caplog.records if "trying again in" in r.getMessage()]
    assert len(waits) == 3
    assert sum("recovered after 3 failure(s)" in r.getMessage() for r in caplog.records) == 1


async def test_a_delayed_retry_waits_in_the_core_and_survives_a_failed_handback() -> None:
    transport = ScriptedTransport()
    transport.subscription.redeliver_failures = 2  # the broker is away when it falls due
    router = _router(transport, retry=Retry(max_attempts=3, backoff=0.05, jitter=0))
    attempts: list[int | None] = []

    @router.subscriber("jobs")
    async def handle(n: int, msg: StreamMessage) -> None:
        attempts.append(msg.delivery_attempt)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    async with router.broker:
        transport.subscription.put(b"1", "m1")
        await eventually(lambda: attempts == [1, 2], "the retry, after two failed hand-backs")
        await eventually(lambda: "ack m1" in transport.events, "the ack")
    assert transport.events == ["redeliver m1", "ack m1", "close"]


async def test_settlements_the_broker_did_not_take_are_sent_again() -> None:
    transport = ScriptedTransport()
    transport.subscription.settle_failures = 2
    router = _router(transport)
    handled: list[int] = []

    @router.subscriber("jobs")
    async def handle(n: int) -> None:
        handled.append(n)

    async with router.broker:
        transport.subscription.put(b"4", "m4")
        await eventually(lambda: "ack m4" in transport.events, "the ack, on the third try")
    assert handled == [4]  # handled once: only the ack was repeated


async def test_stop_cancels_a_waiting_fetch_but_lets_a_delivery_finish() -> None:
    transport = ScriptedTransport()
    router = _router(transport, graceful_timeout=5.0)
    started, finished = asyncio.Event(), asyncio.Event()

    @router.subscriber("jobs")
    async def handle(n: int) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()

    async with router.broker as broker:
        transport.subscription.put(b"1", "m1")
        await asyncio.wait_for(started.wait(), 2)
        await broker.stop()  # while the handler sleeps
        assert finished.is_set()
    assert transport.events == ["ack m1", "close"]

    idle = ScriptedTransport()
    quiet = _router(idle)
    quiet.subscriber("jobs")(handle)
    async with quiet.broker as broker:
        await asyncio.sleep(0.05)  # the loop waits in fetch
        await asyncio.wait_for(broker.stop(), 1.0)  # not the 0.2 s fetch wait, nor more
    assert idle.events == ["close"]


async def test_keepalive_runs_while_the_subscription_runs() -> None:
    transport = ScriptedTransport()
    router = _router(transport)

    @router.subscriber("jobs")
    async def handle(n: int) -> None:
        return None

    async with router.broker:
        await eventually(lambda: transport.subscription.keepalives >= 3, "three keepalives")
    count = transport.subscription.keepalives
    await asyncio.sleep(0.05)
    assert transport.subscription.keepalives == count  # stopped with the subscriber


async def test_a_broker_down_at_start_is_connected_in_the_background() -> None:
    transport = ScriptedTransport()
    transport.connect_failures = 3
    router = _router(transport)
    handled: list[int] = []

    @router.subscriber("jobs")
    async def handle(n: int) -> None:
        handled.append(n)

    async with router.broker as broker:
        assert broker.started
        assert not await broker.ping()
        with pytest.raises(PublishError, match="not reachable yet"):
            await broker.publish(1, "jobs")
        await eventually(lambda: transport.connected, "the connection")
        await eventually(lambda: broker.subscribers[0].running, "the subscriber started")
        transport.subscription.put(b"5", "m5")
        await eventually(lambda: handled == [5], "a message once connected")


async def test_fail_fast_raises_at_start() -> None:
    transport = ScriptedTransport()
    transport.connect_failures = 1
    router = _router(transport, fail_fast=True)
    with pytest.raises(TransportError, match="nobody answers"):
        await router.broker.start()
    assert not router.broker.started
