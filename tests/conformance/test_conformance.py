"""The behaviour every transport must show, written against the public API only.

Each test builds routers the way an application does (``transport.router()`` is
``StreamRouter(url)``), registers handlers with ``@router.subscriber``, runs the broker
with ``async with router.broker`` and publishes with ``broker.publish``. Tests named
after Watermill's universal tests keep its name in the docstring, so the port can be
checked against ``pubsub/tests/test_pubsub.go``; C1-C6 refer to RELIABILITY.md §2.2.

Where a transport lacks a feature (``transport.features``), the test asserts what the
transport does instead; nothing is skipped.

No ``from __future__ import annotations`` here: handlers' annotations are read at
registration, and string annotations would not resolve names local to a test.
"""

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_stream import (
    ConfigurationError,
    Middleware,
    PublishError,
    RequestTimeout,
    Retry,
    Settlement,
    StreamError,
    StreamMessage,
)

from .conftest import TransportUnderTest

pytestmark = pytest.mark.anyio

#: A small backoff so retries are quick.
FAST_RETRY = Retry(max_attempts=3, backoff=0.01)


class Order(BaseModel):
    id: int
    quantity: int


class CountDeliveries(Middleware):
    """Counts every delivery by message id, including ones that fail validation."""

    def __init__(self) -> None:
        self.seen: Counter[str | None] = Counter()

    async def consume(self, message: StreamMessage, call_next: Any) -> Any:
        self.seen[message.message_id] += 1
        return await call_next(message)


# -- publish / subscribe ---------------------------------------------------------------


async def test_publish_subscribe(transport: TransportUnderTest) -> None:
    """Watermill TestPublishSubscribe: every message arrives once, with its payload,
    headers and correlation id intact."""
    channel = transport.channel("events")
    router = transport.router()
    received: list[tuple[dict[str, int], dict[str, str], str | None]] = []

    @router.subscriber(channel)
    async def handle(payload: dict[str, int], msg: StreamMessage) -> None:
        received.append((payload, dict(msg.headers), msg.correlation_id))

    async with router.broker as broker:
        for n in range(10):
            await broker.publish(
                {"n": n},
                channel,
                headers={"test": f"value-{n}", "x-tenant": "acme"},
                correlation_id=f"corr-{n}",
            )
        await transport.eventually(lambda: len(received) >= 10, "10 messages")
        await transport.quiet()

    assert len(received) == 10
    for payload, headers, correlation_id in sorted(received, key=lambda r: r[0]["n"]):
        n = payload["n"]
        assert headers["test"] == f"value-{n}"
        assert headers["x-tenant"] == "acme"
        assert correlation_id == f"corr-{n}"


async def test_stream_message_parameter(transport: TransportUnderTest) -> None:
    """A ``StreamMessage`` parameter exposes the delivery's id, channel, headers and body."""
    channel = transport.channel("metadata")
    router = transport.router()
    received: list[StreamMessage] = []

    @router.subscriber(channel)
    async def handle(msg: StreamMessage) -> None:
        received.append(msg)

    async with router.broker as broker:
        await broker.publish(
            {"hello": "world"}, channel, headers={"x-source": "tests"}, message_id="msg-42"
        )
        await transport.eventually(lambda: received, "message")

    msg = received[0]
    assert msg.message_id == "msg-42"
    assert msg.channel == channel
    assert msg.headers["x-source"] == "tests"
    assert msg.decode() == {"hello": "world"}
    assert msg.delivery_attempt in (None, 1)
    assert msg.settlement is Settlement.ACK


async def test_topic(transport: TransportUnderTest) -> None:
    """Watermill TestTopic / TestConcurrentSubscribeMultipleTopics: each channel gets
    exactly its own messages."""
    channels = [transport.channel("topic", name) for name in ("a", "b", "c")]
    router = transport.router()
    received: dict[str, list[str]] = {channel: [] for channel in channels}

    def consume(channel: str) -> None:
        @router.subscriber(channel)
        async def handle(text: str) -> None:
            received[channel].append(text)

    for channel in channels:
        consume(channel)

    async with router.broker as broker:
        for n in range(5):
            for channel in channels:
                await broker.publish(f"{channel}#{n}", channel)
        await transport.eventually(
            lambda: all(len(texts) >= 5 for texts in received.values()), "5 messages per channel"
        )
        await transport.quiet()

    for channel, texts in received.items():
        assert sorted(texts) == [f"{channel}#{n}" for n in range(5)]


async def test_path_parameters(transport: TransportUnderTest) -> None:
    """A channel pattern ``orders.{region}`` gives handlers ``region`` like a path
    parameter, and matches exactly one segment."""
    pattern = transport.channel("orders", "{region}")
    router = transport.router()
    received: list[tuple[str, int, str]] = []

    @router.subscriber(pattern)
    async def handle(order_id: int, region: str, msg: StreamMessage) -> None:
        received.append((region, order_id, msg.channel))

    if not transport.features.patterns:
        with pytest.raises(ConfigurationError, match="pattern"):
            await router.broker.start()
        await router.broker.close()
        return
    async with router.broker as broker:
        await broker.publish(1, pattern.format(region="eu"))
        await broker.publish(2, pattern.format(region="us"))
        two_segments = pattern.format(region="eu") + transport.case.separator + "x"
        if transport.features.unroutable_raises:
            with pytest.raises(PublishError):
                await broker.publish(3, two_segments)
        else:
            await broker.publish(3, two_segments)
        await transport.eventually(lambda: len(received) >= 2, "2 messages")
        await transport.quiet()

    assert sorted(received) == [
        ("eu", 1, pattern.format(region="eu")),
        ("us", 2, pattern.format(region="us")),
    ]


# -- consumer groups -------------------------------------------------------------------


async def test_competing_consumers(transport: TransportUnderTest) -> None:
    """Watermill TestConcurrentSubscribe: subscribers sharing a group split its messages;
    every message is handled once. Without groups, each subscriber gets every message."""
    channel = transport.channel("jobs")
    router = transport.router()
    handled: list[tuple[str, int]] = []

    def worker(name: str) -> None:
        @router.subscriber(channel, group="workers")
        async def handle(n: int) -> None:
            handled.append((name, n))
            await asyncio.sleep(0.005)  # some I/O, so the other worker gets its turn

    worker("first")
    worker("second")
    count = 20

    async with router.broker as broker:
        for n in range(count):
            await broker.publish(n, channel)
        expected = count if transport.features.groups else 2 * count
        await transport.eventually(lambda: len(handled) >= expected, f"{expected} deliveries")
        await transport.quiet()

    by_worker = {
        name: sorted(n for who, n in handled if who == name) for name in ("first", "second")
    }
    if transport.features.groups:
        assert sorted(n for _, n in handled) == list(range(count)), "lost or duplicated"
        assert by_worker["first"], "the first worker got nothing"
        assert by_worker["second"], "the second worker got nothing"
    else:
        assert by_worker == {"first": list(range(count)), "second": list(range(count))}


async def test_consumer_groups(transport: TransportUnderTest) -> None:
    """Watermill TestConsumerGroups: two different groups each receive every message."""
    channel = transport.channel("orders")
    router = transport.router()
    received: dict[str, list[int]] = {"billing": [], "shipping": []}

    def consume(group: str) -> None:
        @router.subscriber(channel, group=group)
        async def handle(n: int) -> None:
            received[group].append(n)

    for group in received:
        consume(group)

    async with router.broker as broker:
        for n in range(10):
            await broker.publish(n, channel)
        if transport.features.independent_groups:
            await transport.eventually(
                lambda: all(len(ns) >= 10 for ns in received.values()), "10 messages per group"
            )
        else:
            await transport.eventually(
                lambda: sum(map(len, received.values())) >= 10, "10 messages in all"
            )
        await transport.quiet()

    if not transport.features.independent_groups:
        # A work queue: the groups compete, and each message is handled once.
        assert sorted(received["billing"] + received["shipping"]) == list(range(10))
        return
    assert {group: sorted(ns) for group, ns in received.items()} == {
        "billing": list(range(10)),
        "shipping": list(range(10)),
    }


async def test_continue_after_subscriber_restart(transport: TransportUnderTest) -> None:
    """Watermill TestContinueAfterSubscribeClose: what a group's channel receives while
    its consumer is stopped is delivered when the consumer comes back. Without
    persistence those messages are lost, and only later ones arrive."""
    channel = transport.channel("invoices")
    received: list[int] = []

    def consumer() -> Any:
        router = transport.router()

        @router.subscriber(channel, group="invoicing")
        async def handle(n: int) -> None:
            received.append(n)

        return router.broker

    async with consumer() as broker:
        await broker.publish(1, channel)
        await transport.eventually(lambda: received == [1], "the first message")

    async with transport.router().broker as publisher:  # the consumer is down meanwhile
        await publisher.publish(2, channel)
        await publisher.publish(3, channel)

    async with consumer() as broker:
        await broker.publish(4, channel)
        await transport.eventually(lambda: 4 in received, "the message published after")
        if transport.features.persistent:
            await transport.eventually(
                lambda: len(received) >= 4, "the messages published while down"
            )
        await transport.quiet()

    expected = [1, 2, 3, 4] if transport.features.persistent else [1, 4]
    assert sorted(received) == expected


# -- ordering and concurrency ----------------------------------------------------------


async def test_publish_subscribe_in_order(transport: TransportUnderTest) -> None:
    """Watermill TestPublishSubscribeInOrder (single subscriber): 100 messages arrive in
    publish order. Unordered transports only deliver the same set."""
    channel = transport.channel("ledger")
    router = transport.router()
    received: list[int] = []

    @router.subscriber(channel)
    async def handle(n: int) -> None:
        received.append(n)

    async with router.broker as broker:
        for n in range(100):
            await broker.publish(n, channel)
        await transport.eventually(lambda: len(received) >= 100, "100 messages")

    if transport.features.ordered:
        assert received == list(range(100))
    else:
        assert sorted(received) == list(range(100))


async def test_order_kept_across_restart(transport: TransportUnderTest) -> None:
    """Messages a stopped consumer fetched but never started go back to the group in
    publish order: the next consumer still sees the channel in order."""
    channel = transport.channel("ledger")
    first = transport.router()
    started: list[int] = []

    @first.subscriber(channel, group="bookkeeping")
    async def book(n: int) -> None:
        started.append(n)
        await asyncio.sleep(0.1)  # keeps the rest waiting behind the first message

    async with first.broker as broker:
        for n in range(20):
            await broker.publish(n, channel)
        await transport.eventually(lambda: started, "the first message")

    second = transport.router()
    received: list[int] = []

    @second.subscriber(channel, group="bookkeeping")
    async def book_again(n: int) -> None:
        received.append(n)

    async with second.broker:
        if transport.features.persistent:
            await transport.eventually(
                lambda: len(started) + len(received) >= 20, "the messages left behind"
            )
        await transport.quiet()

    assert len(set(started + received)) == len(started + received), "processed twice"
    if transport.features.persistent:
        assert sorted(started + received) == list(range(20))
    if transport.features.ordered:
        assert received == sorted(received)


async def test_max_workers_run_concurrently(transport: TransportUnderTest) -> None:
    """``max_workers=4`` handles up to four messages of one subscriber at once."""
    channel = transport.channel("thumbnails")
    router = transport.router()
    done: list[int] = []
    active = peak = 0

    @router.subscriber(channel, max_workers=4)
    async def handle(n: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        done.append(n)

    async with router.broker as broker:
        for n in range(8):
            await broker.publish(n, channel)
        await transport.eventually(lambda: len(done) >= 8, "8 messages")

    assert sorted(done) == list(range(8))
    assert 1 < peak <= 4


# -- settlement: nack, reject, retries, dead letters -----------------------------------


async def test_resend_on_error(transport: TransportUnderTest) -> None:
    """Watermill TestResendOnError: a handler error nacks, and the message comes back
    until it is processed. Without redelivery, a failed message is gone."""
    channel = transport.channel("payments")
    router = transport.router()
    failures = 2
    attempts: dict[int, list[int | None]] = {n: [] for n in range(5)}
    processed: list[int] = []

    @router.subscriber(channel, retry=FAST_RETRY)
    async def handle(n: int, msg: StreamMessage) -> None:
        attempts[n].append(msg.delivery_attempt)
        if len(attempts[n]) <= failures:
            raise RuntimeError("transient failure")
        processed.append(n)

    async with router.broker as broker:
        for n in attempts:
            await broker.publish(n, channel)
        if transport.features.redelivery:
            await transport.eventually(lambda: len(processed) >= 5, "5 processed messages")
        else:
            await transport.eventually(
                lambda: all(attempts.values()), "the first delivery of each message"
            )
        await transport.quiet()

    if transport.features.redelivery:
        assert sorted(processed) == list(range(5))
        for seen in attempts.values():
            assert len(seen) == failures + 1
            assert seen in ([None] * 3, [1, 2, 3])  # the broker's count, where it keeps one
    else:
        assert processed == []
        assert all(len(seen) == 1 for seen in attempts.values())


async def test_manual_nack_redelivers(transport: TransportUnderTest) -> None:
    """``await msg.nack()`` hands the message back for another delivery, even though the
    handler returned normally."""
    channel = transport.channel("manual-nack")
    router = transport.router()
    deliveries: list[int | None] = []

    @router.subscriber(channel)
    async def handle(msg: StreamMessage) -> None:
        deliveries.append(msg.delivery_attempt)
        if len(deliveries) == 1:
            await msg.nack()

    async with router.broker as broker:
        await broker.publish("once", channel)
        expected = 2 if transport.features.redelivery else 1
        await transport.eventually(lambda: len(deliveries) >= expected, f"{expected} deliveries")
        await transport.quiet()

    assert len(deliveries) == expected
    if transport.features.redelivery and deliveries[0] is not None:
        assert deliveries == [1, 2]


async def test_reject_is_not_redelivered(transport: TransportUnderTest) -> None:
    """``await msg.reject()`` settles for good: the message never comes back."""
    channel = transport.channel("manual-reject")
    router = transport.router()
    deliveries: list[str] = []

    @router.subscriber(channel)
    async def handle(text: str, msg: StreamMessage) -> None:
        deliveries.append(text)
        await msg.reject()

    async with router.broker as broker:
        await broker.publish("first", channel)
        await broker.publish("second", channel)
        await transport.eventually(lambda: len(deliveries) >= 2, "2 deliveries")
        await transport.quiet()

    assert sorted(deliveries) == ["first", "second"]


async def test_poison_message_is_dead_lettered(transport: TransportUnderTest) -> None:
    """C1: a handler that keeps failing sees the message exactly ``max_attempts`` times;
    then it goes to the dead-letter channel with its body, its headers and where it came
    from, and never comes back. Without redelivery the first nack drops it."""
    channel = transport.channel("charges")
    dead_letters = transport.channel("charges", "dead")
    router = transport.router()
    deliveries: list[int | None] = []
    dead: list[StreamMessage] = []

    @router.subscriber(channel, retry=FAST_RETRY, dead_letter=dead_letters)
    async def charge(msg: StreamMessage) -> None:
        deliveries.append(msg.delivery_attempt)
        raise ValueError("card declined")

    @router.subscriber(dead_letters)
    async def on_dead_letter(msg: StreamMessage) -> None:
        dead.append(msg)

    async with router.broker as broker:
        await broker.publish(
            {"charge": 7}, channel, headers={"x-tenant": "acme"}, correlation_id="corr-7"
        )
        if transport.features.redelivery:
            await transport.eventually(lambda: dead, "a dead letter")
        else:
            await transport.eventually(lambda: deliveries, "a delivery")
        await transport.quiet()

    if not transport.features.redelivery:
        assert len(deliveries) == 1
        assert dead == []
        return
    assert deliveries in ([None] * 3, [1, 2, 3])  # exactly max_attempts deliveries
    assert len(dead) == 1
    letter = dead[0]
    assert letter.decode() == {"charge": 7}
    assert letter.correlation_id == "corr-7"
    assert letter.headers["x-tenant"] == "acme"
    assert letter.headers["x-original-channel"] == channel
    assert letter.headers["x-delivery-attempts"] == str(FAST_RETRY.max_attempts)
    assert "card declined" in letter.headers["x-dead-letter-reason"]


async def test_invalid_payload_is_rejected_and_next_processed(
    transport: TransportUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """C2: a body that fails validation is rejected at once, never redelivered, logged
    at ERROR with the channel and the invalid field (not the value); the next message is
    processed."""
    channel = transport.channel("orders")
    router = transport.router()
    deliveries = CountDeliveries()
    processed: list[int] = []

    @router.subscriber(channel, retry=FAST_RETRY, middlewares=[deliveries])
    async def handle(order: Order) -> None:
        processed.append(order.id)

    with caplog.at_level(logging.ERROR, logger="fastapi_stream"):
        async with router.broker as broker:
            await broker.publish({"id": 1, "quantity": "plenty"}, channel, message_id="bad-1")
            await broker.publish({"id": 2, "quantity": 3}, channel, message_id="good-2")
            await transport.eventually(
                lambda: processed and deliveries.seen["bad-1"], "both messages"
            )
            await transport.quiet()

    assert processed == [2]
    assert deliveries.seen["bad-1"] == 1
    errors = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR and "bad-1" in record.getMessage()
    ]
    assert len(errors) == 1, errors
    assert channel in errors[0]
    assert "quantity" in errors[0]
    assert "plenty" not in errors[0]


# -- request / reply -------------------------------------------------------------------


async def test_request_reply(transport: TransportUnderTest) -> None:
    """``broker.request()`` returns the handler's result, with the request's correlation
    id. Without request/reply the request fails with a ``StreamError``."""
    channel = transport.channel("double")
    router = transport.router()

    @router.subscriber(channel)
    async def double(n: int) -> int:
        return 2 * n

    async with router.broker as broker:
        if not transport.features.request_reply:
            with pytest.raises(StreamError):
                await broker.request(21, channel, timeout=transport.case.wait_timeout)
            return
        reply = await broker.request(
            21, channel, timeout=transport.case.wait_timeout, correlation_id="corr-21"
        )

    assert reply.decode() == 42
    assert reply.correlation_id == "corr-21"


async def test_request_timeout_leaves_nothing_behind(transport: TransportUnderTest) -> None:
    """C6: with no responder, or a responder too slow, ``request()`` raises
    ``RequestTimeout`` on time; no task is left behind, a late reply goes nowhere and the
    next request gets its own reply."""
    answered = transport.channel("answered")
    unanswered = transport.channel("unanswered")
    slow = transport.channel("slow")
    router = transport.router()
    late_replies: list[int] = []

    @router.subscriber(answered)
    async def echo(n: int) -> int:
        return n

    @router.subscriber(slow)
    async def too_slow(n: int) -> int:
        await asyncio.sleep(0.2)
        late_replies.append(n)
        return n

    timeout = 0.1
    loop = asyncio.get_running_loop()
    async with router.broker as broker:
        if not transport.features.request_reply:
            with pytest.raises(StreamError):
                await broker.request(1, unanswered, timeout=timeout)
            return
        # A first request sets up whatever reply machinery the transport keeps.
        assert (
            await broker.request(1, answered, timeout=transport.case.wait_timeout)
        ).decode() == 1
        tasks_before = len(asyncio.all_tasks())

        started = loop.time()
        with pytest.raises(RequestTimeout):
            await broker.request(2, unanswered, timeout=timeout)
        assert loop.time() - started < timeout + 1.0

        with pytest.raises(RequestTimeout):
            await broker.request(3, slow, timeout=timeout)
        await transport.eventually(lambda: late_replies, "the late reply")
        await transport.quiet()

        reply = await broker.request(4, answered, timeout=transport.case.wait_timeout)
        assert reply.decode() == 4
        assert len(asyncio.all_tasks()) == tasks_before


# -- shutdown --------------------------------------------------------------------------


@pytest.mark.parametrize("max_workers", [1, 4])
async def test_graceful_shutdown_drains_in_flight(
    transport: TransportUnderTest, max_workers: int
) -> None:
    """C4: closing the broker stops fetching and waits for the running handlers. What
    they finish is acked; what none of them started is left to the next consumer. Across
    the restart every message is processed exactly once."""
    channel = transport.channel("reports")
    first = transport.router(graceful_timeout=transport.case.wait_timeout)
    started: list[StreamMessage] = []
    finished: list[int] = []

    @first.subscriber(channel, group="reporting", max_workers=max_workers)
    async def build_report(n: int, msg: StreamMessage) -> None:
        started.append(msg)
        await asyncio.sleep(0.2)
        finished.append(n)

    async with first.broker as broker:
        for n in (1, 2, 3):
            await broker.publish(n, channel)
        await transport.eventually(lambda: started, "a handler to start")

    assert sorted(finished) == sorted(msg.decode() for msg in started)
    assert all(msg.settlement is Settlement.ACK for msg in started)

    second = transport.router()
    after_restart: list[int] = []

    @second.subscriber(channel, group="reporting")
    async def build_report_again(n: int) -> None:
        after_restart.append(n)

    async with second.broker as broker:
        await broker.publish(4, channel)
        await transport.eventually(lambda: 4 in after_restart, "a message after the restart")
        if transport.features.persistent:
            await transport.eventually(
                lambda: len(finished) + len(after_restart) >= 4, "the messages left behind"
            )
        await transport.quiet()

    processed = finished + after_restart
    assert len(processed) == len(set(processed)), f"processed twice: {processed}"
    if transport.features.persistent:
        assert sorted(processed) == [1, 2, 3, 4]


@pytest.mark.parametrize("max_workers", [1, 4])
async def test_graceful_timeout_cancels_without_settling(
    transport: TransportUnderTest, max_workers: int
) -> None:
    """C3 (FastStream #3010): a handler still running at ``graceful_timeout`` is
    cancelled, and its message is neither acked nor rejected: it is delivered again after
    a restart. Without persistence the unsettled message is lost with the consumer."""
    channel = transport.channel("exports")
    graceful_timeout = 0.2
    first = transport.router(graceful_timeout=graceful_timeout)
    stuck: list[StreamMessage] = []
    cancelled: list[int] = []

    @first.subscriber(channel, group="exporting", max_workers=max_workers)
    async def export(n: int, msg: StreamMessage) -> None:
        stuck.append(msg)
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.append(n)
            raise

    loop = asyncio.get_running_loop()
    async with first.broker as broker:
        await broker.publish(1, channel)
        await transport.eventually(lambda: stuck, "the handler to start")
        closing = loop.time()

    assert loop.time() - closing < graceful_timeout + 1.0
    assert cancelled == [1]
    assert stuck[0].settlement is None

    second = transport.router()
    redelivered: list[StreamMessage] = []

    @second.subscriber(channel, group="exporting")
    async def export_again(n: int, msg: StreamMessage) -> None:
        redelivered.append(msg)

    async with second.broker:
        if transport.features.persistent:
            await transport.eventually(lambda: redelivered, "the interrupted message")
        await transport.quiet()

    if not transport.features.persistent:
        assert redelivered == []
        return
    assert len(redelivered) == 1
    assert redelivered[0].message_id == stuck[0].message_id
    assert redelivered[0].delivery_attempt in (None, 2)


async def test_close_twice_is_harmless(transport: TransportUnderTest) -> None:
    """Closing a broker that never started, or one already closed, does nothing; a
    broker started again on the same connection settings works."""
    channel = transport.channel("close")
    router = transport.router()
    received: list[int] = []

    @router.subscriber(channel)
    async def handle(n: int) -> None:
        received.append(n)

    broker = router.broker
    await broker.close()
    async with broker:
        await broker.publish(1, channel)
        await transport.eventually(lambda: received == [1], "a message")
    await broker.close()
    await broker.close()

    again = transport.router()

    @again.subscriber(channel)
    async def handle_again(n: int) -> None:
        received.append(n)

    async with again.broker as broker:
        await broker.publish(2, channel)
        await transport.eventually(lambda: 2 in received, "a message after closing")
    assert received == [1, 2]


async def test_concurrent_close_waits_for_in_flight_handlers(
    transport: TransportUnderTest,
) -> None:
    """Watermill: "Close() is idempotent". A second ``close()`` made while the first one
    drains (a lifespan shutdown racing a signal handler) returns only once the in-flight
    handler finished and its message was acked, never closing the connection under it."""
    channel = transport.channel("close-race")
    router = transport.router(graceful_timeout=transport.case.wait_timeout)
    started: list[StreamMessage] = []
    finished: list[int] = []

    @router.subscriber(channel)
    async def handle(n: int, msg: StreamMessage) -> None:
        started.append(msg)
        await asyncio.sleep(0.2)
        finished.append(n)

    broker = router.broker
    await broker.start()
    await broker.publish(1, channel)
    await transport.eventually(lambda: started, "the handler to start")

    first_close = asyncio.create_task(broker.close())
    await asyncio.sleep(0.01)  # the first close is now waiting for the handler
    await asyncio.wait_for(broker.close(), transport.case.wait_timeout)
    second_close_saw = (list(finished), started[0].settlement)
    await asyncio.wait_for(first_close, transport.case.wait_timeout)

    assert second_close_saw == ([1], Settlement.ACK)
