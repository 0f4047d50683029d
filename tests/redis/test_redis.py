"""Redis-only behaviour against the real Redis on 127.0.0.1:6379: consumer groups, claims,
dead letters, the reliable list, patterns, the envelope, recovery and request/reply.

No ``from __future__ import annotations``: handlers' annotations are read at registration.
"""

import asyncio
import json
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_stream import (
    ConfigurationError,
    PublishError,
    RequestTimeout,
    Retry,
    StreamMessage,
    TransportError,
)
from fastapi_stream.core.envelope import ENVELOPE_PREFIX
from fastapi_stream.core.envelope import unpack as decode_value
from fastapi_stream.redis import PubSub, RedisTransport, StreamSub
from fastapi_stream.redis.options import Kind
from fastapi_stream.testing import TestStreamBroker

from .conftest import URL, client_ids, eventually, router

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

REPO = Path(__file__).resolve().parents[2]


# -- streams ---------------------------------------------------------------------------


async def test_stream_group_split_across_two_consumers(uid: str, raw: aioredis.Redis) -> None:
    stream = f"test.{uid}.orders"
    handled: list[tuple[str, int]] = []
    first, second = router(uid), router(uid)

    @first.subscriber(stream=StreamSub(stream, group="billing"))
    async def bill_a(n: int) -> None:
        handled.append(("a", n))
        await asyncio.sleep(0.01)

    @second.subscriber(stream=StreamSub(stream, group="billing"))
    async def bill_b(n: int) -> None:
        handled.append(("b", n))
        await asyncio.sleep(0.01)

    async with first.broker as broker, second.broker:
        for n in range(30):
            await broker.publish(n, stream, stream=True)
        await eventually(lambda: len(handled) >= 30, "30 messages")
        await asyncio.sleep(0.2)

    assert sorted(n for _, n in handled) == list(range(30))
    assert {who for who, _ in handled} == {"a", "b"}
    groups = await raw.xinfo_groups(stream)
    assert [(g["name"], g["pending"]) for g in groups] == [(b"billing", 0)]


async def test_pending_entries_of_a_dead_consumer_are_claimed(
    uid: str, raw: aioredis.Redis
) -> None:
    stream = f"test.{uid}.invoices"
    await raw.xgroup_create(stream, "invoicing", id="$", mkstream=True)
    for n in range(3):
        await raw.xadd(stream, {"body": json.dumps(n)})
    # A consumer reads them and dies without acking.
    await raw.xreadgroup("invoicing", "dead-worker", {stream: ">"}, count=10)
    received: list[tuple[int, int | None]] = []
    app = router(uid, min_idle_time=0.3)

    @app.subscriber(stream=StreamSub(stream, group="invoicing"))
    async def invoice(n: int, msg: StreamMessage) -> None:
        received.append((n, msg.delivery_attempt))

    async with app.broker:
        await eventually(lambda: len(received) >= 3, "the claimed entries")

    assert received == [(0, 2), (1, 2), (2, 2)]  # second delivery, counted by the PEL
    assert (await raw.xpending(stream, "invoicing"))["pending"] == 0


async def test_dead_letter_stream_after_max_deliveries(uid: str, raw: aioredis.Redis) -> None:
    """Deliveries are counted by the PEL; the last one dead-letters the entry to a stream
    (a dead letter keeps the kind of its source) and acks it."""
    stream, dead = f"test.{uid}.charges", f"test.{uid}.charges.dead"
    attempts: list[int | None] = []
    app = router(uid)

    @app.subscriber(
        stream=StreamSub(stream, group="charging"),
        retry=Retry(max_attempts=3, backoff=0.01),
        dead_letter=dead,
    )
    async def charge(msg: StreamMessage) -> None:
        attempts.append(msg.delivery_attempt)
        raise ValueError("card declined")

    async with app.broker as broker:
        await broker.publish({"charge": 7}, stream, stream=True, correlation_id="c-7")
        await eventually(lambda: len(attempts) >= 3, "three deliveries")
        for _ in range(200):
            if await raw.exists(dead):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)

    assert attempts == [1, 2, 3]
    assert (await raw.xpending(stream, "charging"))["pending"] == 0
    entries = await raw.xrange(dead)
    assert entries is not None and len(entries) == 1
    fields = entries[0][1]
    assert fields is not None
    assert json.loads(fields[b"body"]) == {"charge": 7}
    assert fields[b"correlation_id"] == b"c-7"
    headers = json.loads(fields[b"headers"])
    assert headers["x-delivery-attempts"] == "3"
    assert headers["x-original-channel"] == stream
    assert "card declined" in headers["x-dead-letter-reason"]


async def test_stream_recovers_when_deleted_without_a_log_flood(
    uid: str, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """FastStream #2611/#3106: NOGROUP after the stream is deleted is fixed by creating
    the group again, with a backoff and one log line per step, not a hot loop."""
    stream = f"test.{uid}.events"
    received: list[int] = []
    app = router(uid)

    @app.subscriber(stream=StreamSub(stream, group="g"))
    async def handle(n: int) -> None:
        received.append(n)

    with caplog.at_level(logging.WARNING, logger="fastapi_stream.redis"):
        async with app.broker as broker:
            await broker.publish(1, stream, stream=True)
            await eventually(lambda: received == [1], "the first message")
            await raw.delete(stream)  # the stream and its group are gone
            await asyncio.sleep(1.0)
            await broker.publish(2, stream, stream=True)
            await eventually(lambda: 2 in received, "a message after the deletion")

    assert received == [1, 2]
    failures = [r for r in caplog.records if "NOGROUP" in r.getMessage()]
    assert 1 <= len(failures) <= 3, [r.getMessage() for r in failures]


async def test_maxlen_trims_the_stream(uid: str, raw: aioredis.Redis) -> None:
    stream = f"test.{uid}.metrics"
    app = router(uid)
    publisher = app.publisher(stream=stream, maxlen=5)
    async with app.broker:
        for n in range(20):
            await publisher.publish(n)
    assert await raw.xlen(stream) == 5


# -- lists -----------------------------------------------------------------------------

_KILLED_CONSUMER = """
import asyncio, sys
from fastapi_stream.redis import RedisRouter

app = RedisRouter({url!r}, min_idle_time=0.5)

@app.subscriber(list={name!r})
async def handle(msg: str) -> None:
    print("started", msg, flush=True)
    await asyncio.Event().wait()

async def main() -> None:
    async with app.broker:
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_reliable_list_survives_a_consumer_killed_mid_message(
    uid: str, raw: aioredis.Redis
) -> None:
    queue = f"test.{uid}.jobs"
    script = textwrap.dedent(_KILLED_CONSUMER.format(url=URL, name=queue))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    app = router(uid, min_idle_time=0.5)
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 15)
        assert ready.strip() == b"ready"
        await app.broker.connect()
        await app.broker.publish("resize-42", queue, list=True, message_id="job-42")
        started = await asyncio.wait_for(process.stdout.readline(), 5)
        assert started.split() == [b"started", b"resize-42"]
    finally:
        process.send_signal(signal.SIGKILL)  # only the process this test started
        await asyncio.wait_for(process.wait(), 5)

    received: list[tuple[str, str | None]] = []

    @app.subscriber(list=queue)
    async def handle(job: str, msg: StreamMessage) -> None:
        received.append((job, msg.message_id))

    async with app.broker:
        await eventually(lambda: received, "the job of the killed consumer")
        await asyncio.sleep(0.2)

    assert received == [("resize-42", "job-42")]
    assert await raw.llen(queue) == 0
    assert [k async for k in raw.scan_iter(match=f"{queue}:processing:*")] == []


async def test_list_consumers_compete_and_a_nack_comes_back_first(uid: str) -> None:
    queue = f"test.{uid}.work"
    seen: list[str] = []
    app = router(uid)

    @app.subscriber(list=queue, retry=Retry(max_attempts=2, backoff=0))
    async def work(item: str) -> None:
        seen.append(item)
        if item == "a" and seen.count("a") == 1:
            raise RuntimeError("try again")

    async with app.broker as broker:
        for item in "abc":
            await broker.publish(item, queue, list=True)
        await eventually(lambda: len(seen) >= 4, "four deliveries")

    assert seen[0] == "a"
    assert sorted(seen) == ["a", "a", "b", "c"]


# -- results: published together per delivery, before the acks ------------------------


@pytest.mark.parametrize("kind", ["stream", "list"])
async def test_results_go_out_in_order_and_every_message_is_acked(
    uid: str, raw: aioredis.Redis, kind: str
) -> None:
    source, results = f"test.{uid}.in", f"test.{uid}.out"
    app = router(uid)

    # Read from the start, so the messages published before it starts are one delivery.
    where = {"stream": StreamSub(source, last_id="0")} if kind == "stream" else {"list": source}

    @app.subscriber(**where)  # type: ignore[arg-type]
    @app.publisher(list=results)
    async def double(n: int) -> int:
        return n * 2

    async with app.broker as broker:
        await broker.stop()
        for n in range(50):
            await broker.publish(n, source, **{kind: True})
        await broker.start()
        await eventually(lambda: double.call_count == 50, "50 handled messages")
        await eventually(lambda: _filled(raw, results, 50), "50 results")
        await eventually(lambda: _settled(raw, kind, source), "every message acked")

    assert [int(v) for v in await _bodies(raw, results)] == [n * 2 for n in range(50)]


async def test_a_handlers_own_publish_goes_out_before_it_returns(
    uid: str, raw: aioredis.Redis
) -> None:
    source, side = f"test.{uid}.in", f"test.{uid}.side"
    app = router(uid)
    seen_by_redis: list[int] = []

    @app.subscriber(list=source)
    @app.publisher(list=f"test.{uid}.out")
    async def handle(n: int) -> int:
        await app.broker.publish(n, side, list=True)
        seen_by_redis.append(await raw.llen(side))  # already there: not deferred
        return n

    async with app.broker as broker:
        for n in range(3):
            await broker.publish(n, source, list=True)
        await eventually(lambda: len(seen_by_redis) == 3, "three handled messages")

    assert seen_by_redis == [1, 2, 3]


async def test_results_that_cannot_be_published_are_handled_again(
    uid: str, raw: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source, results = f"test.{uid}.in", f"test.{uid}.out"
    app = router(uid)
    transport = app.broker.transport
    assert isinstance(transport, RedisTransport)
    publish_many = transport.publish_many
    failures = [PublishError("Redis went away")]

    async def flaky(items: Any) -> None:
        if failures:
            raise failures.pop()
        await publish_many(items)

    monkeypatch.setattr(transport, "publish_many", flaky)

    @app.subscriber(stream=source)
    @app.publisher(list=results)
    async def echo(text: str) -> str:
        return text

    async with app.broker as broker:
        await broker.publish("hello", source, stream=True)
        await eventually(lambda: _filled(raw, results, 1), "the result, on the second try")
        await eventually(lambda: _settled(raw, "stream", source), "the source entry acked")

    assert echo.call_count == 2
    assert await _bodies(raw, results) == [b"hello"]
    assert "handled again" in caplog.text


async def _filled(raw: aioredis.Redis, key: str, n: int) -> bool:
    return bool(await raw.llen(key) >= n)


async def _bodies(raw: aioredis.Redis, key: str) -> list[bytes]:
    """The bodies of the list ``key``'s items (fastapi_stream's envelope unwrapped)."""
    return [decode_value(value)[0] for value in await raw.lrange(key, 0, -1)]


async def _settled(raw: aioredis.Redis, kind: str, source: str) -> bool:
    """Whether every message read from ``source`` was acked."""
    if kind == "stream":
        groups = await raw.xinfo_groups(source)
        return all(group["pending"] == 0 for group in groups)
    processing = [key async for key in raw.scan_iter(match=f"{source}:processing:*")]
    return all([await raw.llen(key) == 0 for key in processing])


# -- pub/sub patterns: the test broker routes exactly like Redis -----------------------

PUBLISHED = [
    "test.{uid}.orders.eu",
    "test.{uid}.orders.us",
    "test.{uid}.orders.eu.late",
    "test.{uid}.logs.ax.1",
    "test.{uid}.logs.bq.2",
    "test.{uid}.logs.c1.3",
    "test.{uid}.logs.a",
]


@pytest.mark.parametrize("real", [True, False], ids=["redis", "test-broker"])
async def test_patterns_route_alike_on_redis_and_the_test_broker(uid: str, real: bool) -> None:
    app = router(uid)
    regions: list[tuple[str, int]] = []
    logs: list[str] = []

    @app.subscriber(f"test.{uid}.orders.{{region}}")
    async def order(n: int, region: str) -> None:
        regions.append((region, n))

    @app.subscriber(channel=PubSub(f"test.{uid}.logs.[ab]?.*", pattern=True))
    async def log_line(line: int, msg: StreamMessage) -> None:
        logs.append(msg.channel.rsplit(".", 2)[-2])

    async with TestStreamBroker(app, with_real=real) as broker:
        for n, channel in enumerate(PUBLISHED):
            await broker.publish(n, channel.format(uid=uid))
        if real:
            await eventually(lambda: len(regions) >= 2 and len(logs) >= 2, "4 messages")
            await asyncio.sleep(0.2)

    assert sorted(regions) == [("eu", 0), ("us", 1)]
    assert sorted(logs) == ["ax", "bq"]


async def test_patterns_are_refused_for_lists_and_streams(uid: str) -> None:
    app = router(uid)

    @app.subscriber(stream=f"test.{uid}.orders.{{region}}")
    async def handle(n: int) -> None: ...

    with pytest.raises(ConfigurationError, match="pattern"):
        await app.broker.start()
    await app.broker.close()


# -- the envelope and other producers --------------------------------------------------


async def test_messages_from_other_producers(uid: str, raw: aioredis.Redis) -> None:
    """A plain JSON payload is accepted as it is; the documented envelope, written by
    hand as a producer in another language would, carries headers and ids."""
    queue, stream = f"test.{uid}.list", f"test.{uid}.stream"
    got: list[tuple[Any, dict[str, str], str | None, str | None]] = []
    app = router(uid)

    @app.subscriber(list=queue)
    async def from_list(payload: dict[str, Any], msg: StreamMessage) -> None:
        got.append((payload, dict(msg.headers), msg.correlation_id, msg.reply_to))

    @app.subscriber(stream=stream)
    async def from_stream(payload: dict[str, Any], msg: StreamMessage) -> None:
        got.append((payload, dict(msg.headers), msg.correlation_id, msg.message_id))

    meta = {"message_id": "m-1", "correlation_id": "c-1", "headers": {"x-tenant": "acme"}}
    async with app.broker:
        await raw.rpush(queue, b'{"id": 1}')
        await raw.rpush(queue, ENVELOPE_PREFIX + json.dumps(meta).encode() + b'\n{"id": 2}')
        await raw.xadd(stream, {"id": "3", "kind": "plain"})
        await raw.xadd(stream, {"body": '{"id": 4}', "correlation_id": "c-4", "headers": "{}"})
        await eventually(lambda: len(got) >= 4, "4 messages")

    by_id = {payload["id"]: rest for payload, *rest in got}
    assert by_id[1] == [{}, None, None]
    assert by_id[2] == [{"x-tenant": "acme"}, "c-1", None]
    plain = next(p for p, *_ in got if p["id"] == "3")
    assert plain == {"id": "3", "kind": "plain"}
    assert by_id[4][1] == "c-4"


# -- connection faults -----------------------------------------------------------------


async def test_consumers_recover_after_their_connections_are_killed(
    uid: str, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis restart as the client sees it: every connection of this test's router is
    killed (by id, from a second connection); each kind of consumer comes back."""
    names = {kind: f"test.{uid}.{kind}" for kind in ("pubsub", "list", "stream")}
    received: dict[str, list[int]] = {kind: [] for kind in names}
    app = router(uid)

    @app.subscriber(channel=names["pubsub"])
    async def on_channel(n: int) -> None:
        received["pubsub"].append(n)

    @app.subscriber(list=names["list"])
    async def on_list(n: int) -> None:
        received["list"].append(n)

    @app.subscriber(stream=StreamSub(names["stream"], group="g"))
    async def on_stream(n: int) -> None:
        received["stream"].append(n)

    with caplog.at_level(logging.WARNING, logger="fastapi_stream.redis"):
        async with app.broker as broker:
            ids = await client_ids(raw, f"fs-test-{uid}")
            assert ids
            for client_id in ids:
                await raw.client_kill_filter(_id=client_id)
            await broker.publish(1, names["list"], list=True)
            await broker.publish(1, names["stream"], stream=True)
            # Pub/sub is at-most-once: what is published before the consumer subscribed
            # again is lost, so publish until one arrives (bounded).
            for _ in range(50):
                await broker.publish(1, names["pubsub"])
                await asyncio.sleep(0.1)
                if received["pubsub"]:
                    break
            await eventually(lambda: all(received.values()), "every kind after the kill")
    assert received["list"] == [1]
    assert received["stream"] == [1]
    assert len(caplog.records) < 20


async def test_publish_raises_within_its_timeout_when_redis_is_unreachable() -> None:
    transport = RedisTransport("redis://127.0.0.1:1/0", connect_timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportError, match="cannot connect"):
        await transport.connect()
    assert loop.time() - started < 2.0
    with pytest.raises(TransportError, match="not connected"):
        await transport.publish(_outgoing("x"))
    await transport.close()
    await transport.close()
    assert await transport.ping(0.1) is False


async def test_publish_into_a_black_hole_raises_in_time(uid: str) -> None:
    """A connection that stops answering (a hung Redis): publish gives up after its
    ``publish_timeout`` with ``PublishError``."""
    silent = asyncio.Event()
    peers: list[asyncio.StreamWriter] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", 6379)
        peers.extend([writer, upstream])

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if not silent.is_set():
                    dst.write(data)
                    await dst.drain()

        await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = RedisTransport(f"redis://127.0.0.1:{port}/0", publish_timeout=0.3)
    try:
        await transport.connect()
        await transport.publish(_outgoing(f"test.{uid}.x"))
        silent.set()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PublishError, match="did not confirm"):
            await transport.publish(_outgoing(f"test.{uid}.x"))
        assert loop.time() - started < 1.0
        assert await transport.ping(0.2) is False
    finally:
        await transport.close()
        for peer in peers:
            peer.close()
        server.close()
        await server.wait_closed()


def test_describe_hides_the_password() -> None:
    transport = RedisTransport("rediss://alice:s3cret@redis.internal:6380/2")
    assert "s3cret" not in transport.describe()
    assert transport.describe().startswith("rediss://alice:***@redis.internal:6380")


# -- request / reply -------------------------------------------------------------------


async def pubsub_connections(raw: aioredis.Redis, name: str) -> int:
    """Connections named ``name`` that hold a pub/sub subscription."""
    clients = await raw.client_list()
    return sum(1 for c in clients if c.get("name") == name and int(c["sub"]) + int(c["psub"]))


@pytest.mark.parametrize("kind", ["pubsub", "list", "stream"])
async def test_requests_leave_no_connection_behind(
    uid: str, raw: aioredis.Redis, kind: Kind
) -> None:
    """FastStream PR #2430: a pub/sub connection leaked per request. Here one reply
    subscription serves every request, answered or timed out, and nothing is left after
    the broker closes."""
    service, name = f"test.{uid}.double", f"fs-test-{uid}"
    app = router(uid, default_kind=kind)

    @app.subscriber(service)
    async def double(n: int) -> int:
        return 2 * n

    async with app.broker as broker:
        assert (await broker.request(1, service, timeout=3)).decode() == 2
        tasks = await settled_task_count()
        replies = await asyncio.gather(*(broker.request(n, service, timeout=3) for n in range(20)))
        assert [r.decode() for r in replies] == [2 * n for n in range(20)]
        connections = len(await client_ids(raw, name))
        for _ in range(5):
            with pytest.raises(RequestTimeout):
                await broker.request(1, f"test.{uid}.nobody", timeout=0.05)
        assert len(await client_ids(raw, name)) == connections
        # The reply inbox, plus the subscriber's own on pub/sub.
        assert await pubsub_connections(raw, name) == (2 if kind == "pubsub" else 1)
        assert await settled_task_count() == tasks
    assert await client_ids(raw, name) == []


async def settled_task_count() -> int:
    """Tasks once redis-py's short-lived ones (a pipeline hands its connection back to the
    pool in a task of its own) have finished."""
    await asyncio.sleep(0.05)
    return len(asyncio.all_tasks())


def _outgoing(channel: str) -> Any:
    from fastapi_stream import OutgoingMessage

    return OutgoingMessage(channel=channel, body=b"1")


async def test_items_taken_by_a_fetch_whose_reply_was_lost_are_queued_again(
    uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The take moves items into this consumer's processing list; if its reply is lost
    (a cut connection, a timeout), a live consumer must not keep them there forever."""
    queue = f"test.{uid}.jobs"
    app = router(uid)
    seen: list[int] = []

    @app.subscriber(list=queue)
    async def handle(n: int) -> None:
        seen.append(n)

    async with app.broker as broker:
        subscription: Any = broker.subscribers[0]._loop.subscription  # type: ignore[union-attr]
        take = subscription._take
        lost = [True]

        async def take_then_lose_the_reply(**kwargs: Any) -> Any:
            moved = await take(**kwargs)
            if moved and lost:
                lost.clear()
                raise ConnectionError("the connection was cut before the reply came")
            return moved

        subscription._take = take_then_lose_the_reply
        for n in range(5):
            await broker.publish(n, queue, list=True)
        # Well before min_idle_time (30 s), which only helps with dead consumers.
        await eventually(lambda: sorted(seen) == [0, 1, 2, 3, 4], "all five", timeout=10)
    assert not lost
    assert "whose reply was lost are queued again" in caplog.text


async def test_a_burst_of_publishes_waits_for_connections_instead_of_failing(
    uid: str, raw: aioredis.Redis
) -> None:
    """More concurrent publishes than the pool has connections wait for a free one
    (redis-py's default pool raised MaxConnectionsError at once for the rest)."""
    name = f"test.{uid}.burst"
    async with router(uid, max_connections=10).broker as broker:
        await asyncio.gather(*(broker.publish(i, name, list=True) for i in range(200)))
    assert await raw.llen(name) == 200
