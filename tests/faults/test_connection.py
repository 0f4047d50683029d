"""Fault cases F10, F12, F13, F14 and F15 of RELIABILITY.md §3: connections that go
silent, publishing while the broker is away, requests nobody answers, a stream or
consumer deleted under a running consumer, and a short soak.

F10: a black-holed connection (the loopback proxy stops forwarding, without closing).
F12: ``publish()`` during an outage, and an unroutable RabbitMQ publish. F13: requests
to a killed responder. F14: the stream, the consumer or the queue deleted. F15: a soak
with broker kills, consumer kills and black holes repeated (``make faults`` only).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import Any

import pytest

from fastapi_stream import PublishError, RequestTimeout
from fastapi_stream.core.backoff import Backoff
from fastapi_stream.core.consume import FETCH_TIMEOUT
from fastapi_stream.core.replies import Replies
from tests.faults import report
from tests.faults.harness import Outcome, Producer, outcome, wait_done
from tests.faults.kinds import Kind, Settings, stream_name
from tests.faults.proxy import Proxy
from tests.faults.rig import (
    FULL_RUN,
    Rig,
    check,
    idle_cpu,
    kinds,
    progress,
    recovery_limit,
    until,
    window,
)

pytestmark = [pytest.mark.anyio, pytest.mark.faults]

ALL = ("redis-stream", "redis-list", "nats-js", "kafka", "rabbit")


# -- F12: publishing while the broker is down ---------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "rig", kinds("redis-stream", "nats-js", full=("redis-list", "kafka", "rabbit")), indirect=True
)
async def test_f12_publish_during_outage(rig: Rig) -> None:
    """With the broker killed, every ``publish()`` raises ``PublishError`` within
    ``publish_timeout`` (2 s here; + 1 s of slack for a loaded machine): no hang, and
    no silent success. Once the broker is back publishing works again within the
    recovery limit. On RabbitMQ a publish no queue is bound for raises too (mandatory)."""
    publish_timeout = 2.0
    await rig.start_broker()
    settings = rig.settings(publish_timeout=publish_timeout)
    options = rig.kind.publish_options()
    service = rig.service(settings, rig.ledger())  # declares the queue, stream, topic
    await service.ready()
    async with Producer(rig.kind, settings) as producer:
        broker = producer.router.broker
        await producer.run(range(5), rate=0, publishers=1)
        problems: list[str] = []
        if rig.kind.broker == "rabbit":
            try:
                await broker.publish({"n": -1}, f"{settings.channel}.nobody", message_id="u")
                problems.append("an unroutable publish returned (no error)")
            except PublishError:
                pass
        await asyncio.to_thread(rig.broker.kill)
        slowest = 0.0
        for n in range(5, 10):
            started = time.monotonic()
            try:
                async with asyncio.timeout(publish_timeout + 10):
                    await broker.publish({"n": n}, settings.channel, message_id=f"m-{n}", **options)
                problems.append(f"m-{n} published while the broker was down (silent success)")
            except PublishError:
                pass
            except TimeoutError:
                problems.append(f"m-{n}: publish() hung for {publish_timeout + 10} s")
            except Exception as exc:
                problems.append(f"m-{n} raised {type(exc).__name__}, not PublishError: {exc}")
            slowest = max(slowest, time.monotonic() - started)
        if slowest > publish_timeout + 1:
            problems.append(f"a publish took {slowest:.1f} s to raise (limit {publish_timeout}+1)")
        up = await rig.start_broker()
        await producer.run(range(10, 15), rate=0, publishers=1)
        recovery = min(producer.confirmed[f"m-{n}"] for n in range(10, 15)) - up
    result = Outcome(
        "F12 publish during an outage",
        rig.kind.name,
        len(producer.confirmed),
        0,
        0,
        0,
        round(recovery, 2),
        recovery_limit(rig.kind),
        note=(
            f"5 of 5 publishes raised PublishError, the slowest after {slowest:.1f} s "
            f"(publish_timeout {publish_timeout:g} s)"
            + ("; unroutable raised PublishError" if rig.kind.broker == "rabbit" else "")
        ),
        lost_measured=False,
    )
    report.record(result)
    problems += result.problems()
    assert not problems, f"F12 on {rig.kind.name}: " + "; ".join(problems)


# -- F13: requests to a responder that was killed ---------------------------------------------


def _waiting(transport: Any) -> int:
    """Requests the transport still waits a reply for (its ``Replies``)."""
    return sum(len(v) for v in vars(transport).values() if isinstance(v, Replies))


def _resources() -> dict[str, int]:
    return {
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "rig", kinds("redis-stream", "nats-js", full=("redis-list", "kafka", "rabbit")), indirect=True
)
async def test_f13_requests_to_a_killed_responder(rig: Rig) -> None:
    """50 requests answered at once, then the responder is killed -9 and 200 requests
    (1,000 under ``make faults``) are made, 50 at a time, each with a 1 s timeout: every
    one raises ``RequestTimeout``, and the requester's asyncio tasks, open fds and
    waiting requests are back to what they were after the first 50 timed out (the
    warm-up: a connection pool grows to the concurrency and stays, which is no leak).

    50 at a time, not more: redis-py's pool (100 connections, not blocking) makes the
    101st concurrent command fail with ``MaxConnectionsError`` (a ``PublishError``)."""
    total = 1000 if FULL_RUN else 200
    await rig.start_broker()
    settings = rig.settings()
    ledger = rig.ledger()
    service = rig.service(settings, ledger)
    await service.ready()
    options = rig.kind.publish_options()
    async with Producer(rig.kind, settings) as producer:
        broker = producer.router.broker
        started = time.monotonic()
        await broker.request({"n": -1}, settings.channel, timeout=30, **options)
        first = time.monotonic() - started
        await asyncio.gather(
            *(broker.request({"n": n}, settings.channel, timeout=15, **options) for n in range(50))
        )
        service.kill()
        errors: dict[str, int] = {}
        started = time.monotonic()

        async def ask(n: int) -> None:
            try:
                await broker.request({"n": n}, settings.channel, timeout=1.0, **options)
                errors["answered"] = errors.get("answered", 0) + 1
            except RequestTimeout:
                pass
            except Exception as exc:
                key = f"{type(exc).__name__}: {exc}"[:300]
                errors[key] = errors.get(key, 0) + 1

        baseline: dict[str, int] = {}
        for chunk in range(50, total + 50, 50):
            await asyncio.gather(*(ask(n) for n in range(chunk, chunk + 50)))
            if not baseline:
                await asyncio.sleep(0.5)
                baseline = {**_resources(), "waiting": _waiting(broker.transport)}
        elapsed = time.monotonic() - started
        after: dict[str, int] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = {**_resources(), "waiting": _waiting(broker.transport)}
            if all(after[key] <= baseline[key] for key in baseline):
                break
            await asyncio.sleep(0.2)
    problems = []
    if errors:
        problems.append(f"not RequestTimeout: {errors}")
    if elapsed > total / 50 * 1.0 + 10:
        problems.append(f"{total} requests took {elapsed:.1f} s")
    grown = {k: (baseline[k], after[k]) for k in baseline if after[k] > baseline[k]}
    if grown:
        problems.append(f"not back to the baseline (before, after): {grown}")
    result = Outcome(
        "F13 requests to a killed responder",
        rig.kind.name,
        total,
        0,
        0,
        0,
        None,
        None,
        note=(
            f"first reply after {first:.1f} s; "
            f"{total - sum(errors.values())} of {total} RequestTimeout in {elapsed:.1f} s; "
            f"tasks {baseline['tasks']}→{after['tasks']}, fds {baseline['fds']}→{after['fds']}, "
            f"waiting {baseline['waiting']}→{after['waiting']}"
        ),
        lost_measured=False,
    )
    report.record(result)
    assert not problems, f"F13 on {rig.kind.name}: " + "; ".join(problems)


# -- F14: the stream, consumer or queue deleted under a running consumer ------------------------


async def _delete(kind: Kind, settings: Settings) -> str:
    """Delete what the running consumer reads from; say what was deleted."""
    if kind.name == "redis-stream":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.url, socket_timeout=5)
        try:
            await client.delete(settings.channel)
        finally:
            await client.aclose()
        return "DEL of the stream (and its group)"
    if kind.name == "redis-list":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.url, socket_timeout=5)
        try:
            await client.flushall()
        finally:
            await client.aclose()
        return "FLUSHALL"
    if kind.broker == "nats":
        import nats

        connection = await nats.connect(settings.url, connect_timeout=2, allow_reconnect=False)
        try:
            await connection.jetstream().delete_consumer(
                stream_name(settings.channel), settings.group
            )
        finally:
            await connection.close()
        return "the JetStream consumer deleted"
    import aio_pika

    connection = await aio_pika.connect(settings.url, timeout=10)
    try:
        channel = await connection.channel()
        await channel.queue_delete(settings.channel)
    finally:
        await connection.close()
    return "the queue deleted"


def _resume_limit(kind: Kind) -> float:
    """Seconds from the deletion until consuming resumes: the recovery limit; on NATS
    plus the period an idle subscription checks that its consumer exists (a deleted
    consumer goes silent, it does not fail)."""
    from fastapi_stream.nats.consume import NatsSubscription

    extra = NatsSubscription.check_every if kind.broker == "nats" else 0.0
    return recovery_limit(kind, extra)


def _steps(seconds: float, backoff: Backoff) -> int:
    """How many reconnect waits fit in ``seconds`` at the shortest (jitter) delays."""
    steps, spent = 0, 0.0
    while True:
        spent += min(backoff.first * backoff.multiplier**steps, backoff.cap) * (1 - backoff.jitter)
        if spent > seconds:
            return steps
        steps += 1


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "rig", kinds("redis-stream", "nats-js", full=("redis-list", "rabbit")), indirect=True
)
async def test_f14_stream_or_group_deleted(rig: Rig) -> None:
    """Under a running consumer: Redis ``DEL`` of the stream (its group goes with it),
    ``FLUSHALL`` under a list consumer, the JetStream durable consumer deleted, the
    RabbitMQ queue deleted. Then 50 more messages. Either consuming resumes (the group,
    consumer or queue recreated: every message confirmed after the deletion is handled),
    or the subscriber stops with a clear error and readiness 503. Either way no hot loop
    (the service under 10 % of a core) and no log flood (at most one line per reconnect
    wait, + 2). Kafka is not in it: a group with members cannot be deleted, and tansu
    does not delete topics."""
    await rig.start_broker()
    settings = rig.settings()
    ledger = rig.ledger()
    service = rig.service(settings, ledger)
    await service.ready()
    async with Producer(rig.kind, settings) as producer:
        await producer.run(range(50), rate=0, publishers=5)
        await until(lambda: len(ledger.read().handled) >= 50, "progress", 30)
        before = dict(producer.confirmed)
        log_start = len(service.log_text().splitlines())
        assert service.pid is not None
        cpu_start = service_cpu(service)
        deleted_at = time.monotonic()
        what = await _delete(rig.kind, settings)
        publishing = asyncio.create_task(producer.run(range(50, 100), rate=25, publishers=2))
        deleted_wall = time.time()
        after: set[str] = set()
        resumed = False
        limit_s = _resume_limit(rig.kind)
        deadline = time.monotonic() + limit_s + 10
        while time.monotonic() < deadline:
            after = set(producer.confirmed) - before.keys()
            if publishing.done() and after <= ledger.read().handled.keys():
                resumed = True
                break
            await asyncio.sleep(0.2)
        observed = time.monotonic() - deleted_at
        ready = await service.is_ready()
        cpu = (service_cpu(service) - cpu_start) / observed
        idle = await idle_cpu(service)
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        if resumed:
            await wait_done(rig.kind, settings, producer, ledger, timeout=20)
    lines = service.log_text().splitlines()[log_start:]
    limit = _steps(observed, Backoff()) + 2
    problems = []
    if not resumed and ready:
        problems.append(
            f"after {what} consuming did not resume ({len(after - ledger.handled.keys())} of "
            f"{len(after)} new messages not handled) and readiness still says 200"
        )
    if not resumed and not lines:
        problems.append("consuming stopped without a log line")
    if len(lines) > limit:
        problems.append(f"{len(lines)} log lines in {observed:.0f} s (limit {limit}): {lines[:5]}")
    if max(cpu, idle) > 0.1:
        problems.append(f"the service used {max(cpu, idle):.0%} of a core")
    # A recreated JetStream consumer starts from the stream's start: the old messages again.
    replay = len(before) if rig.kind.broker == "nats" else 0
    result = outcome(
        "F14 stream or group deleted",
        rig.kind,
        producer,
        ledger,
        window=window(rig.kind, settings) + replay,
        recovery=ledger.first_after(deleted_wall) if resumed else None,
        recovery_limit=limit_s if resumed else None,
        note=(
            f"{what}: "
            + ("consuming resumed" if resumed else f"stopped, readiness {(ready and 200) or 503}")
            + f"; {len(lines)} log lines, CPU {max(cpu, idle):.0%}"
        ),
        confirmed={mid: at for mid, at in producer.confirmed.items() if mid not in before},
    )
    if not resumed:
        result.lost_measured = False
        result.lost = 0
    report.record(result)
    problems += result.problems()
    assert not problems, f"F14 on {rig.kind.name}: " + "; ".join(problems)


def service_cpu(service: Any) -> float:
    from tests.faults.proc import process_stats

    return process_stats(service.pid)["cpu"]


# -- F10: a black-holed connection -----------------------------------------------------------

HEARTBEAT = 2.0


def detection_limit(kind: Kind) -> float:
    """Seconds a silent connection may go unnoticed: two heartbeats where the client has
    them (RabbitMQ's ``heartbeat``, NATS's ``ping_interval``: 2 s in the case); Redis
    connections have none, and a fetch is bounded by the core's ``FETCH_TIMEOUT``."""
    return FETCH_TIMEOUT if kind.broker == "redis" else 2 * HEARTBEAT


async def _black_hole(rig: Rig, proxy: Proxy, run: int = 1, total: int = 400) -> Outcome:
    """One black hole under a stream of messages; the service reaches the broker
    through ``proxy``, the producer directly."""
    settings = rig.settings(heartbeat=HEARTBEAT)
    through = replace(settings, url=_via(rig.broker.url, proxy.port))
    ledger = rig.ledger(f"ledger-hole-{run}")
    service = rig.service(through, ledger, sleep=0.002)
    await service.ready()
    async with Producer(rig.kind, settings) as producer:
        publishing = asyncio.create_task(producer.run(range(total), rate=40))
        await until(
            lambda: len(ledger.read().handled) >= total // 4,
            "progress",
            60,
            progress(producer, ledger),
        )
        holed = time.time()
        holes = proxy.blackhole()
        assert holes, "the service had no connection through the proxy"
        await publishing
        await wait_done(
            rig.kind, settings, producer, ledger, timeout=detection_limit(rig.kind) + 60
        )
        assert service.alive(), service.tail()
        ledger.read()
        # Consuming resumed: the first message published after the black hole handled.
        later = {mid for mid, at in producer.confirmed.items() if at > holed + 0.2}
        handled = [t for t, mid, _ in ledger.handlings if mid in later]
        recovery = min(handled) - holed if handled else None
        detected = service.first_log_after(holed)
        service.kill()
    result = outcome(
        "F10 black-holed connection",
        rig.kind,
        producer,
        ledger,
        window=window(rig.kind, settings),
        recovery=recovery,
        recovery_limit=detection_limit(rig.kind) + recovery_limit(rig.kind),
        note=(
            f"{holes} connection(s) silenced; noticed after "
            + ("never" if detected is None else f"{detected:.1f} s")
            + f" (limit {detection_limit(rig.kind):g} s)"
        ),
    )
    result.detection = None if detected is None else round(detected, 2)
    result.detection_limit = detection_limit(rig.kind)
    return result


def _via(url: str, port: int) -> str:
    scheme, rest = url.split("://", 1)
    userinfo, _, hostpath = rest.rpartition("@")
    _, _, path = hostpath.partition("/")
    where = f"127.0.0.1:{port}" + (f"/{path}" if "/" in hostpath else "")
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{where}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "rig",
    kinds(
        "nats-js",
        "redis-list",  # the regression test of a take lost on a silent connection
        full=("redis-stream", "rabbit"),
    ),
    indirect=True,
)
async def test_f10_black_holed_connection(rig: Rig) -> None:
    """The service's connections go silent (the loopback proxy reads and drops, closes
    nothing) under a stream of 400 messages at 40/s. The dead connection is noticed
    within two heartbeats (2 s each here; Redis: the fetch bound) and the service
    reconnects (new connections pass): consuming resumes within that + the recovery
    limit, nothing confirmed is lost, duplicates within the in-flight window.

    Kafka is not in it: the broker advertises its own address, so a proxy in front of it
    carries only the bootstrap connection."""
    await rig.start_broker()
    proxy = Proxy(("127.0.0.1", rig.broker.port))
    await proxy.start()
    try:
        result = await _black_hole(rig, proxy)
    finally:
        await proxy.stop()
    check(result)


# -- F15: a soak with broker kills, consumer kills and black holes ------------------------------


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    "rig", kinds(full=("redis-stream", "redis-list", "nats-js", "rabbit")), indirect=True
)
async def test_f15_soak(rig: Rig) -> None:
    """Two replicas in one group for a few minutes (``FAULTS_SOAK_CYCLES``, 5 by default,
    about 45 s each): A reaches the broker through the proxy and is never restarted, B
    directly. Each cycle publishes 1,200 messages at 100/s while the broker is killed -9
    (3 s down), B is killed -9 and started again, and A's connections are black-holed;
    then every confirmed message must be handled. A's resident memory, asyncio tasks and
    open fds, taken when each cycle has drained, grow less than 10 % over the first
    cycle's (the warm-up), the plan's limit."""
    cycles = int(os.environ.get("FAULTS_SOAK_CYCLES", "5"))
    per_cycle = 1200
    await rig.start_broker()
    proxy = Proxy(("127.0.0.1", rig.broker.port))
    await proxy.start()
    settings = rig.settings(heartbeat=HEARTBEAT)
    ledger = rig.ledger()
    a = rig.service(replace(settings, url=_via(rig.broker.url, proxy.port)), ledger, sleep=0.002)
    b = rig.service(settings, ledger, sleep=0.002)
    await a.ready()
    await b.ready()
    samples: list[dict[str, float]] = []
    results: list[Outcome] = []
    try:
        async with Producer(rig.kind, settings) as producer:
            for cycle in range(cycles):
                start, before = cycle * per_cycle, set(producer.confirmed)
                publishing = asyncio.create_task(
                    producer.run(range(start, start + per_cycle), rate=100)
                )

                def sent(share: float, start: int = start) -> bool:
                    return len(producer.confirmed) - start >= per_cycle * share

                await until(lambda: sent(0.2), "publishing", 60, progress(producer, ledger))
                await rig.kill_broker(down=3.0)
                await until(lambda: sent(0.5), "publishing", 90, progress(producer, ledger))
                b.kill()
                b.start()
                await until(lambda: sent(0.7), "publishing", 90, progress(producer, ledger))
                proxy.blackhole()
                await publishing
                await wait_done(rig.kind, settings, producer, ledger, timeout=120)
                assert a.alive() and b.alive(), a.tail() + b.tail()
                await asyncio.sleep(1.0)
                samples.append(await a.stats())
                results.append(
                    outcome(
                        "F15 soak: broker kill, consumer kill, black hole",
                        rig.kind,
                        producer,
                        ledger,
                        window=window(rig.kind, settings, faults=2, broker_kills=1),
                        recovery=None,
                        recovery_limit=None,
                        confirmed={
                            mid: at for mid, at in producer.confirmed.items() if mid not in before
                        },
                    )
                )
                ledger.handled.clear()  # duplicates per cycle (lost: confirmed this cycle)
                for mid in producer.confirmed:
                    ledger.handled[mid] = 1
    finally:
        await proxy.stop()
    warm, last = samples[0], samples[1:]
    growth = {
        key: max(s[key] for s in last) / warm[key] - 1 if last else 0.0
        for key in ("rss", "tasks", "fds")
    }
    note = (
        f"{cycles} cycles; A after warm-up: RSS {warm['rss'] / 2**20:.0f} MiB "
        f"{growth['rss']:+.0%}, tasks {warm['tasks']:g} {growth['tasks']:+.0%}, "
        f"fds {warm['fds']:g} {growth['fds']:+.0%}"
    )
    for result in results:
        result.note = note
        report.record(result)
    problems = [
        f"cycle {n + 1}: {'; '.join(r.problems())}" for n, r in enumerate(results) if r.problems()
    ]
    for key in ("rss", "tasks", "fds"):
        if growth[key] >= 0.10:
            problems.append(f"{key} grew {growth[key]:.0%} after the warm-up: {samples}")
    assert not problems, f"F15 on {rig.kind.name}: " + "; ".join(problems)
