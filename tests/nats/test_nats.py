"""NATS-only behaviour on the real nats-server (JetStream on 127.0.0.1:4222).

Every test names its subjects, streams and buckets with a fresh uuid, waits with a bound,
and touches no connection but its own (reconnects are forced client-side).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from pydantic import BaseModel

from fastapi_stream import (
    ConfigurationError,
    PublishError,
    RequestTimeout,
    Retry,
    StreamMessage,
    SubscriptionSpec,
    TransportError,
)
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.nats import JStream, KvWatch, NatsMessage, NatsRouter, NatsTransport, PullSub
from fastapi_stream.nats.consume import NatsSubscription
from fastapi_stream.testing import TestStreamBroker

pytestmark = [pytest.mark.anyio, pytest.mark.nats]

URL = "nats://127.0.0.1:4222"
WAIT = 5.0


def name(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def memory_stream(subjects: Sequence[str]) -> JStream:
    return JStream(name("fs_test_"), subjects=list(subjects), storage="memory", max_age=300)


async def eventually(
    condition: Callable[[], object],
    what: str,
    timeout: float = WAIT,
    poll: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait until ``condition()`` holds (running ``poll()`` before each check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if poll is not None:
            await poll()
        if condition():
            return
        if loop.time() > deadline:
            pytest.fail(f"no {what} within {timeout}s")
        await asyncio.sleep(0.01 if poll is None else 0.1)


@pytest.fixture(autouse=True)
async def _delete_test_streams() -> AsyncIterator[None]:
    yield
    transport = NatsTransport(URL)
    await transport.connect()
    try:
        for info in await transport.jsm.streams_info():
            if info.config.name and info.config.name.startswith("fs_test_"):
                await transport.jsm.delete_stream(info.config.name)
    finally:
        await transport.close()


# -- routing: the test broker routes like the server -----------------------------------


class Log(BaseModel):
    text: str


def routing_router(prefix: str) -> tuple[NatsRouter, dict[str, list[str]]]:
    router = NatsRouter(URL)
    seen: dict[str, list[str]] = {"star": [], "tail": [], "level": [], "exact": []}

    @router.subscriber(f"{prefix}.logs.*")
    async def star(msg: StreamMessage) -> None:
        seen["star"].append(msg.channel.removeprefix(prefix + "."))

    @router.subscriber(f"{prefix}.logs.>")
    async def tail(msg: StreamMessage) -> None:
        seen["tail"].append(msg.channel.removeprefix(prefix + "."))

    @router.subscriber(f"{prefix}.logs.{{level}}")
    async def by_level(log: Log, level: str) -> None:
        seen["level"].append(f"{level}:{log.text}")

    @router.subscriber(f"{prefix}.logs.info")
    async def exact(msg: StreamMessage) -> None:
        seen["exact"].append(msg.channel.removeprefix(prefix + "."))

    return router, seen


EXPECTED_ROUTES = {
    "star": ["logs.info", "logs.error"],
    "tail": ["logs.info", "logs.error", "logs.error.disk"],
    "level": ["info:a", "error:b"],
    "exact": ["logs.info"],
}


@pytest.mark.parametrize("real", [False, True], ids=["test-broker", "nats-server"])
async def test_wildcards_and_path_parameters_route_alike(real: bool) -> None:
    prefix = name()
    router, seen = routing_router(prefix)
    async with TestStreamBroker(router, with_real=real) as broker:
        await broker.publish({"text": "a"}, f"{prefix}.logs.info")
        await broker.publish({"text": "b"}, f"{prefix}.logs.error")
        await broker.publish({"text": "c"}, f"{prefix}.logs.error.disk")
        await broker.publish({"text": "d"}, f"{prefix}.other")
        await eventually(lambda: len(seen["tail"]) >= 3 and len(seen["level"]) >= 2, "routes")
        await asyncio.sleep(0.1)
    assert {key: sorted(value) for key, value in seen.items()} == {
        key: sorted(value) for key, value in EXPECTED_ROUTES.items()
    }


@pytest.mark.parametrize("real", [False, True], ids=["test-broker", "nats-server"])
async def test_durable_subscribers_compete_in_both_brokers(real: bool) -> None:
    subject = f"{name()}.jobs"
    router = NatsRouter(URL)
    stream = memory_stream([subject])
    durable = name("d")
    handled: list[tuple[str, int]] = []

    def worker(who: str) -> None:
        @router.subscriber(subject, stream=stream, durable=durable)
        async def handle(n: int) -> None:
            handled.append((who, n))
            await asyncio.sleep(0.005)

    worker("first")
    worker("second")
    async with TestStreamBroker(router, with_real=real) as broker:
        for n in range(20):
            await broker.publish(n, subject)
        await eventually(lambda: len(handled) >= 20, "20 messages")
        await asyncio.sleep(0.1)
    assert sorted(n for _, n in handled) == list(range(20)), "lost or handled twice"
    assert {who for who, _ in handled} == {"first", "second"}


# -- core NATS -------------------------------------------------------------------------


async def test_queue_group_splits_the_load() -> None:
    subject = f"{name()}.work"
    router = NatsRouter(URL)
    handled: dict[str, list[int]] = {"a": [], "b": []}

    def worker(who: str) -> None:
        @router.subscriber(subject, queue="workers")
        async def handle(n: int) -> None:
            handled[who].append(n)
            await asyncio.sleep(0.001)

    worker("a")
    worker("b")
    async with router.broker as broker:
        for n in range(40):
            await broker.publish(n, subject)
        await eventually(lambda: len(handled["a"]) + len(handled["b"]) >= 40, "40 messages")
        await asyncio.sleep(0.1)
    assert sorted(handled["a"] + handled["b"]) == list(range(40))
    assert handled["a"] and handled["b"]


async def test_plain_payload_without_envelope_headers() -> None:
    subject = name()
    router = NatsRouter(URL)
    received: list[StreamMessage] = []

    @router.subscriber(subject)
    async def handle(msg: StreamMessage) -> None:
        received.append(msg)

    async with router.broker:
        # A producer that knows nothing of fastapi_stream: raw bytes, one header.
        await router.transport.client.publish(subject, b'{"x": 1}', headers={"k": "v"})
        await eventually(lambda: received, "the raw message")
    msg = received[0]
    assert msg.body == b'{"x": 1}'
    assert dict(msg.headers) == {"k": "v"}
    assert msg.message_id is None and msg.content_type is None
    assert msg.decode() == {"x": 1}


async def test_request_reply_and_timeouts_leave_nothing_behind() -> None:
    subject = name()
    router = NatsRouter(URL)

    @router.subscriber(subject)
    async def double(n: int) -> int:
        return 2 * n

    async with router.broker as broker:
        reply = await broker.request(4, subject, timeout=WAIT, correlation_id="c-1")
        assert reply.decode() == 8 and reply.correlation_id == "c-1"
        subscriptions = len(router.transport.client._subs)
        tasks = len(asyncio.all_tasks())
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RequestTimeout, match="no subscriber"):  # no responders: at once
            await broker.request(1, name(), timeout=WAIT)
        assert loop.time() - started < 1.0
        assert len(router.transport.client._subs) == subscriptions
        assert len(asyncio.all_tasks()) == tasks


async def test_concurrent_requests_share_one_inbox_and_each_gets_its_reply() -> None:
    """Replies arrive on one inbox subscription, found by the correlation id at the end of
    their subject: a correlation id that is no subject token works too, and a request
    nobody answers in time leaves no waiter behind."""
    subject = name()
    router = NatsRouter(URL)

    @router.subscriber(subject, max_workers=8)
    async def slow_echo(n: int) -> int:
        await asyncio.sleep(0.01 * (n % 3))
        return n

    @router.subscriber(f"{subject}.silent")
    async def silent(n: int) -> None:
        await asyncio.sleep(WAIT)

    async with router.broker as broker:
        subscriptions = len(router.transport.client._subs)
        replies = await asyncio.gather(
            *(broker.request(n, subject, timeout=WAIT) for n in range(20)),
            broker.request(99, subject, timeout=WAIT, correlation_id="order 7.* >"),
        )
        assert [r.decode() for r in replies] == [*range(20), 99]
        assert replies[-1].correlation_id == "order 7.* >"
        with pytest.raises(RequestTimeout, match="within"):
            await broker.request(1, f"{subject}.silent", timeout=0.2)
        assert len(router.transport.client._subs) == subscriptions
        assert len(router.transport._replies) == 0


async def test_request_to_a_stored_subject_skips_the_stream_ack() -> None:
    subject = f"{name()}.rpc"
    storing = NatsTransport(URL, stream=memory_stream([subject]))  # declares it
    router = NatsRouter(URL)  # a core request and a core responder

    @router.subscriber(subject)
    async def echo(text: str) -> str:
        return text.upper()

    await storing.connect()
    try:
        async with router.broker as broker:
            reply = await broker.request("hi", subject, timeout=WAIT)
    finally:
        await storing.close()
    assert reply.decode() == "HI"


# -- JetStream -------------------------------------------------------------------------


async def test_stream_is_declared_and_publishes_are_confirmed() -> None:
    subject = f"{name()}.events"
    stream = JStream(
        name("fs_test_"), subjects=[subject], retention="workqueue", storage="memory", max_age=60
    )
    router = NatsRouter(URL)
    received: list[int] = []

    @router.subscriber(subject, stream=stream, durable=name("d"))
    async def handle(n: int) -> None:
        received.append(n)

    async with router.broker as broker:
        info = await router.transport.jsm.stream_info(stream.name)
        assert info.config.subjects == [subject]
        assert info.config.retention == "workqueue"
        assert info.config.storage == "memory"
        assert info.config.max_age == 60
        await broker.publish(1, subject)  # a known stream's subject: waits for the PubAck
        await broker.publish(2, subject, stream=stream.name)
        await eventually(lambda: len(received) == 2, "2 messages")
        with pytest.raises(PublishError, match="no JetStream stream"):
            await broker.publish(3, name(), stream=stream.name)


async def test_a_retried_publish_is_stored_once() -> None:
    """JetStream de-duplicates by ``Nats-Msg-Id``, set from the message id and subject: a
    producer that publishes again after a ``PublishError`` does not store it twice, and a
    dead letter keeping its message id still reaches another subject of the stream."""
    subject = f"{name()}.orders"
    stream = memory_stream([f"{subject}.>", subject])
    router = NatsRouter(URL, stream=stream)
    async with router.broker as broker:
        await broker.publish({"n": 1}, subject, message_id="once")
        await broker.publish({"n": 1}, subject, message_id="once")
        await broker.publish({"n": 1}, f"{subject}.dead", message_id="once")
        await broker.publish({"n": 2}, subject, message_id="twice")
        info = await router.transport.jsm.stream_info(stream.name)
        assert info.state.messages == 3
        stored = await router.transport.jsm.get_msg(stream.name, 1)
        assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == f"{subject}:once"


async def test_pull_consumer_delivers_fetched_batches() -> None:
    subject = f"{name()}.batch"
    stream = memory_stream([subject])
    transport = NatsTransport(URL, stream=stream)
    batches: list[list[int]] = []

    async def deliver(messages: Sequence[StreamMessage]) -> None:
        raise AssertionError("a NATS subscription is fetched from, it never delivers")

    await transport.connect()
    try:
        router = NatsRouter(URL)
        async with router.broker as broker:
            for n in range(10):
                await broker.publish(n, subject, stream=stream.name)
        durable = name("d")
        spec = SubscriptionSpec(
            ChannelPattern.parse(subject),
            options={"durable": durable, "pull": PullSub(batch_size=10, timeout=1.0)},
        )
        subscription = await transport.subscribe(spec, deliver)

        async def fetch() -> None:  # what the core's consume loop does
            messages = await subscription.fetch(spec.prefetch)
            if messages:
                batches.append([m.decode() for m in messages])
                await subscription.settle(messages, ())

        await eventually(lambda: sum(map(len, batches)) >= 10, "10 messages", poll=fetch)
        await subscription.close()
        await transport.client.flush()
        info = await transport.jsm.consumer_info(stream.name, durable)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await transport.close()
    assert [n for batch in batches for n in batch] == list(range(10))
    assert max(map(len, batches)) > 1, batches


async def test_a_pull_fetch_returns_what_came_without_waiting_for_a_full_batch() -> None:
    """A pull request stays open for the rest of its batch, but the fetch returns what
    came as soon as it came."""
    subject = f"{name()}.trickle"
    stream = memory_stream([subject])
    transport = NatsTransport(URL, stream=stream)

    async def deliver(messages: Sequence[StreamMessage]) -> None:
        raise AssertionError("a NATS subscription is fetched from, it never delivers")

    await transport.connect()
    try:
        spec = SubscriptionSpec(
            ChannelPattern.parse(subject),
            prefetch=10,
            options={"durable": name("d"), "pull": PullSub(timeout=3.0)},
        )
        subscription = await transport.subscribe(spec, deliver)
        loop = asyncio.get_running_loop()

        async def publish() -> None:
            await asyncio.sleep(0.2)  # after the pull request was sent, on an empty stream
            for n in range(3):
                await transport.js.publish(subject, str(n).encode())

        publishing = asyncio.create_task(publish())
        started = loop.time()
        messages = await subscription.fetch(spec.prefetch)
        waited = loop.time() - started
        await publishing
        assert messages and waited < 1.5, (len(messages), waited)
        await subscription.settle(messages, ())
        await subscription.close()
    finally:
        await transport.close()


async def test_pull_replicas_sharing_max_ack_pending_get_each_message_once() -> None:
    """Two subscribers of one pull durable share its ``max_ack_pending`` (the prefetch):
    each gets a part of a batch and must go on with it. When a fetch waited for a full
    batch, each replica held some of the window until the server redelivered the other's
    part after ``ack_wait``: deliveries twice, a few messages per ``ack_wait`` (fault case
    F11 on JetStream)."""
    subject = f"{name()}.shared"
    stream = memory_stream([subject])
    transport = NatsTransport(URL, stream=stream)
    total = 60
    attempts: dict[int, list[int | None]] = {}

    async def deliver(messages: Sequence[StreamMessage]) -> None:
        raise AssertionError("a NATS subscription is fetched from, it never delivers")

    await transport.connect()
    try:
        spec = SubscriptionSpec(
            ChannelPattern.parse(subject),
            prefetch=10,
            options={"durable": name("d"), "pull": PullSub(timeout=5.0), "ack_wait": 2.0},
        )
        replicas = [await transport.subscribe(spec, deliver) for _ in range(2)]

        async def consume(subscription: NatsSubscription) -> None:
            while True:  # what the core's consume loop does, with a 2 ms handler
                for message in (messages := await subscription.fetch(spec.prefetch)):
                    await asyncio.sleep(0.002)
                    attempts.setdefault(message.decode(), []).append(message.delivery_attempt)
                await subscription.settle(messages, ())

        consumers = [asyncio.create_task(consume(replica)) for replica in replicas]
        try:
            for n in range(total):
                await transport.js.publish(subject, str(n).encode())
                await asyncio.sleep(0.005)
            await eventually(lambda: len(attempts) == total, f"{total} messages", timeout=4.0)
            await asyncio.sleep(0.5)  # a redelivery, if any, comes in this time
        finally:
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            for replica in replicas:
                await replica.close()
    finally:
        await transport.close()
    again = {n: seen for n, seen in attempts.items() if seen != [1]}
    assert not again, f"delivered more than once: {again}"


async def test_nak_redelivers_then_dead_letters_with_the_servers_count() -> None:
    subject = f"{name()}.charges"
    dead_subject = f"{subject}.dead"
    stream = memory_stream([f"{subject}.>", subject])
    router = NatsRouter(URL)
    attempts: list[int | None] = []
    dead: list[StreamMessage] = []

    @router.subscriber(
        subject,
        stream=stream,
        pull=True,
        durable=name("d"),
        max_deliver=3,
        retry=Retry(max_attempts=3, backoff=0.05),
        dead_letter=dead_subject,
    )
    async def charge(msg: StreamMessage) -> None:
        attempts.append(msg.delivery_attempt)
        raise ValueError("declined")

    @router.subscriber(dead_subject, stream=stream)
    async def on_dead(msg: StreamMessage) -> None:
        dead.append(msg)

    async with router.broker as broker:
        info = await router.transport.jsm.consumer_info(
            stream.name, router.broker.subscribers[0].options["durable"]
        )
        assert info.config.max_deliver == 3
        await broker.publish({"charge": 1}, subject, message_id="m-1")
        await eventually(lambda: dead, "a dead letter")
        await asyncio.sleep(0.2)
    assert attempts == [1, 2, 3]
    assert len(dead) == 1
    assert dead[0].headers["x-delivery-attempts"] == "3"
    assert dead[0].message_id == "m-1"


async def test_reject_terminates_and_in_progress_is_available() -> None:
    subject = f"{name()}.long"
    router = NatsRouter(URL, stream=memory_stream([f"{subject}.*"]))
    seen: list[str] = []

    @router.subscriber(f"{subject}.slow", ack_wait=1.0)
    async def slow(msg: StreamMessage) -> None:
        seen.append("slow")
        assert isinstance(msg, NatsMessage)
        for _ in range(3):  # longer than ack_wait, and still delivered once
            await asyncio.sleep(0.4)
            await msg.in_progress()

    @router.subscriber(f"{subject}.bad", ack_wait=1.0)
    async def bad(msg: StreamMessage) -> None:
        seen.append("bad")
        await msg.reject()

    async with router.broker as broker:
        await broker.publish("x", f"{subject}.slow")
        await broker.publish("y", f"{subject}.bad")
        await eventually(lambda: len(seen) >= 2, "2 deliveries")
        await asyncio.sleep(1.8)
    assert sorted(seen) == ["bad", "slow"]


async def test_a_retry_backoff_longer_than_ack_wait_holds() -> None:
    """The subscriber keeps a failed message for its retry backoff (and a handler's
    message while it runs) in progress: JetStream does not deliver it again after
    ``ack_wait`` meanwhile."""
    subject = f"{name()}.slow"
    router = NatsRouter(URL, stream=memory_stream([subject]))
    seen: list[tuple[float, int | None]] = []
    loop = asyncio.get_running_loop()

    @router.subscriber(subject, ack_wait=1.0, retry=Retry(max_attempts=3, backoff=2.0, jitter=0))
    async def handle(msg: StreamMessage) -> None:
        seen.append((loop.time(), msg.delivery_attempt))
        if len(seen) == 1:
            raise ValueError("once")
        if len(seen) == 2:
            await asyncio.sleep(1.5)  # longer than ack_wait too

    async with router.broker as broker:
        await broker.publish("x", subject)
        await eventually(lambda: len(seen) >= 2, "the retry")
        await asyncio.sleep(2.0)
    assert [attempt for _, attempt in seen] == [1, 2]
    assert seen[1][0] - seen[0][0] >= 1.9


async def test_options_are_checked() -> None:
    router = NatsRouter(URL)

    @router.subscriber(name(), durable="d")  # JetStream option without a stream
    async def handle(n: int) -> None: ...

    with pytest.raises(ConfigurationError, match="stream="):
        await router.broker.start()
    await router.broker.close()

    with pytest.raises(ConfigurationError, match="queue= or group="):
        router.subscriber("x", queue="a", group="b")

    other = NatsRouter(URL)
    async with other.broker as broker:
        with pytest.raises(ConfigurationError, match="unknown publish option"):
            await broker.publish(1, name(), key="k")


# -- key-value -------------------------------------------------------------------------


async def test_kv_watch_and_key_value_handle() -> None:
    bucket = name("kv")
    router = NatsRouter(URL)
    changes: list[tuple[str, str, bytes]] = []

    @router.subscriber("config.*", kv_watch=KvWatch(bucket))
    async def on_change(msg: StreamMessage) -> None:
        changes.append((msg.channel, msg.headers["kv-operation"], msg.body))

    async with router.broker:
        kv = await router.key_value(bucket)
        try:
            await kv.put("config.color", b"blue")
            await kv.put("other", b"ignored")
            await kv.put("config.color", b"red")
            await kv.delete("config.color")
            await eventually(lambda: len(changes) >= 3, "3 changes")
        finally:
            await router.transport.js.delete_key_value(bucket)
    assert changes == [
        ("config.color", "PUT", b"blue"),
        ("config.color", "PUT", b"red"),
        ("config.color", "DEL", b""),
    ]


# -- connection ------------------------------------------------------------------------


async def test_unreachable_server_fails_fast_without_credentials() -> None:
    transport = NatsTransport("nats://alice:s3cret@127.0.0.1:1", connect_timeout=0.5)
    assert transport.describe() == "nats://alice:***@127.0.0.1:1"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportError) as caught:
        await transport.connect()
    assert loop.time() - started < 2.0
    assert "s3cret" not in str(caught.value)
    assert await transport.ping(0.1) is False
    await transport.close()
    await transport.close()


async def test_reconnects_forever_by_default() -> None:
    transport = NatsTransport(URL)
    await transport.connect()
    try:
        assert transport.client.options["max_reconnect_attempts"] == -1
        assert await transport.ping(1.0) is True
    finally:
        await transport.close()


async def test_subscriptions_and_pull_loops_resume_after_a_reconnect() -> None:
    prefix = name()
    stream = memory_stream([f"{prefix}.>"])
    router = NatsRouter(URL, reconnect_time_wait=0.1)
    got: dict[str, list[int]] = {"core": [], "push": [], "pull": []}

    @router.subscriber(f"{prefix}-core")
    async def core(n: int) -> None:
        got["core"].append(n)

    @router.subscriber(f"{prefix}.push", stream=stream)
    async def push(n: int) -> None:
        got["push"].append(n)

    @router.subscriber(
        f"{prefix}.pull", stream=stream, durable=name("d"), pull=PullSub(timeout=0.5)
    )
    async def pull(n: int) -> None:
        got["pull"].append(n)

    async with router.broker as broker:
        for kind in got:
            await broker.publish(1, f"{prefix}.{kind}" if kind != "core" else f"{prefix}-core")
        await eventually(lambda: all(got.values()), "a message on each subscriber")

        # What a restart of a server with memory storage does to this client: the
        # connection drops, and the server forgets the messages and the consumers.
        jsm = router.transport.jsm
        await jsm.purge_stream(stream.name)
        for info in await jsm.consumers_info(stream.name):
            await jsm.delete_consumer(stream.name, info.name)
        consumers = 0

        async def count() -> None:
            nonlocal consumers
            consumers = len(await jsm.consumers_info(stream.name))

        await router.transport.client.force_reconnect()
        await eventually(lambda: router.transport.client.is_connected, "the reconnect")
        await eventually(lambda: consumers == 2, "the consumers set up again", poll=count)
        for kind in got:
            await broker.publish(2, f"{prefix}.{kind}" if kind != "core" else f"{prefix}-core")
        await eventually(lambda: all(2 in seen for seen in got.values()), "messages after it")
    assert got == {"core": [1, 2], "push": [1, 2], "pull": [1, 2]}


async def test_a_consumer_deleted_under_a_subscriber_is_created_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deleted consumer goes silent (no error): an idle subscription checks that its
    consumer exists (every 30 s; here at once) and creates it again."""
    monkeypatch.setattr(NatsSubscription, "check_every", 0.0)
    prefix = name()
    stream = memory_stream([f"{prefix}.>"])
    router = NatsRouter(URL)
    got: dict[str, list[int]] = {"push": [], "pull": []}
    durables = {"push": name("d"), "pull": name("d")}

    @router.subscriber(f"{prefix}.push", stream=stream, durable=durables["push"])
    async def push(n: int) -> None:
        got["push"].append(n)

    @router.subscriber(
        f"{prefix}.pull", stream=stream, durable=durables["pull"], pull=PullSub(timeout=0.5)
    )
    async def pull(n: int) -> None:
        got["pull"].append(n)

    async with router.broker as broker:
        for kind in got:
            await broker.publish(1, f"{prefix}.{kind}")
        await eventually(lambda: all(got.values()), "a message on each subscriber")
        jsm = router.transport.jsm
        await jsm.purge_stream(stream.name)  # else the new durables start with message 1
        for durable in durables.values():
            await jsm.delete_consumer(stream.name, durable)
        consumers = 0

        async def count() -> None:
            nonlocal consumers
            consumers = len(await jsm.consumers_info(stream.name))

        await eventually(lambda: consumers == 2, "the consumers created again", poll=count)
        for kind in got:
            await broker.publish(2, f"{prefix}.{kind}")
        await eventually(lambda: all(2 in seen for seen in got.values()), "messages after it")
    assert got == {"push": [1, 2], "pull": [1, 2]}
