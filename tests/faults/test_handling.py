"""Fault cases F5, F7, F8 and F9 of RELIABILITY.md §3: what the consumer does with its own
messages when they are slow, failing, malformed or too many, per durable transport.

F5: the service stopped (SIGTERM) while short and long handlers run. F7: poison messages
among good ones. F8: malformed, mistyped, pickled and oversized payloads. F9: a slow
consumer under a flood (``make faults`` only).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
import signal
import time

import pytest

from fastapi_stream.core.message import OutgoingMessage
from tests.faults import report
from tests.faults.harness import Outcome, Producer, outcome, wait_done
from tests.faults.proc import process_stats
from tests.faults.rig import (
    FULL_RUN,
    Rig,
    check,
    idle_cpu,
    kinds,
    recovery_limit,
    until,
    window,
)

pytestmark = [pytest.mark.anyio, pytest.mark.faults]

ALL = ("redis-stream", "redis-list", "nats-js", "kafka", "rabbit")


# -- F5: SIGTERM with short and long handlers in flight -------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("rig", kinds("redis-stream", "nats-js"), indirect=True)
async def test_f5_sigterm_with_short_and_long_handlers(rig: Rig) -> None:
    """``graceful_timeout`` 5 s; ten messages in flight at once, five that take 1 s and
    five that take 30 s. SIGTERM once the short ones run: they finish and are acked once
    (0 duplicates); the long ones are cancelled at the timeout, left unsettled and
    delivered again to the restarted service. The process exits within the timeout + 2 s.

    The short messages are published first: on Kafka an offset is committed only when
    every earlier one of its partition is done, so a short message behind an unfinished
    long one would be delivered again by design."""
    graceful = 5.0
    await rig.start_broker()
    settings = rig.settings(prefetch=10, workers=10, graceful=graceful)
    ledger = rig.ledger()
    short = [f"m-{n}" for n in range(5)]
    long = [f"m-{n}" for n in range(5, 10)]

    def payload(n: int) -> dict[str, object]:
        return {"n": n, "sleep": 1.0 if n < 5 else 30.0}

    first = rig.service(settings, ledger, begin=1)
    await first.ready()
    async with Producer(rig.kind, settings, payload=payload) as producer:
        await producer.run(range(10), rate=0, publishers=1)

        def shorts_running() -> bool:
            ledger.read()
            return all(mid in ledger.begun for mid in short) and any(
                mid in ledger.begun for mid in long
            )

        await until(shorts_running, "short handlers running", 30, lambda: ledger.begun.keys())
        stopping = time.monotonic()
        await asyncio.to_thread(first.kill, signal.SIGTERM)
        exit_time = time.monotonic() - stopping
        ledger.read()
        done_by_first = set(ledger.handled)
        second = rig.service(settings, ledger, max_sleep=0.05)
        await second.ready()
        await wait_done(rig.kind, settings, producer, ledger, timeout=60)
        assert second.alive(), second.tail()
        ledger.read()
        handled_by = {mid: {pid for _, m, pid in ledger.handlings if m == mid} for mid in long}
        result = outcome(
            "F5 consumer SIGTERM, short and long handlers",
            rig.kind,
            producer,
            ledger,
            window=0,
            recovery=ledger.first_after(second.started_at, pid=second.pid),
            recovery_limit=recovery_limit(rig.kind, rig.kind.takeover(settings)),
            note=f"exit {exit_time:.1f} s after SIGTERM (limit {graceful + 2:g} s)",
        )
        report.record(result)
        problems = result.problems()
        if exit_time > graceful + 2:
            problems.append(f"exited {exit_time:.1f} s after SIGTERM, limit {graceful + 2} s")
        if done_by_first != set(short):
            problems.append(f"the first service finished {sorted(done_by_first)}, not {short}")
        unsettled = [mid for mid in long if handled_by[mid] != {second.pid}]
        if unsettled:
            problems.append(f"long handlers not redelivered to the restarted service: {unsettled}")
        assert not problems, f"F5 on {rig.kind.name}: " + "; ".join(problems)


# -- F7: poison messages among good ones ------------------------------------------------------


async def _poison(rig: Rig, good: int, poison: int) -> Outcome:
    await rig.start_broker()
    settings = rig.settings(dead_letter=True, max_attempts=3, backoff=0.5, max_backoff=1.0)
    ledger = rig.ledger()
    total = good + poison
    step = total // poison
    bad = {n for n in range(step // 2, total, step)}
    poisoned = {f"m-{n}" for n in bad}

    def payload(n: int) -> dict[str, object]:
        return {"n": n, "poison": n in bad}

    service = rig.service(settings, ledger)
    await service.ready()
    async with Producer(rig.kind, settings, payload=payload) as producer:
        await producer.run(range(total), rate=0, publishers=10)
        expected = set(producer.confirmed) - poisoned

        def finished() -> bool:
            ledger.read()
            return expected <= ledger.handled.keys() and poisoned <= ledger.dead.keys()

        state = lambda: f"{len(ledger.handled)} handled, {len(ledger.dead)} dead"  # noqa: E731
        await until(finished, "good messages handled and poison dead-lettered", 120, state)
        await asyncio.sleep(2.0)  # late redeliveries, extra dead letters
        cpu = await idle_cpu(service)
        ledger.read()
    assert service.alive(), service.tail()
    problems = []
    dead_letters = sum(len(v) for v in ledger.dead.values())
    if set(ledger.dead) != poisoned or dead_letters != len(poisoned):
        problems.append(f"{dead_letters} dead letters for {len(poisoned)} poison messages")
    wrong = {mid: v for mid, v in ledger.dead.items() if v != [str(settings.max_attempts)]}
    if wrong:
        problems.append(f"x-delivery-attempts not {settings.max_attempts}: {wrong}")
    tries = {mid: ledger.failed[mid] for mid in poisoned if ledger.failed[mid] != 3}
    if tries:
        problems.append(f"poison messages not tried exactly max_attempts times: {tries}")
    if poisoned & ledger.handled.keys():
        problems.append("a poison message was handled")
    # No hot loop: one failing message is delivered again no sooner than the backoff allows.
    minimum = settings.backoff * (1 - settings.retry.jitter)
    gaps: list[float] = []
    for mid in poisoned:
        times = sorted(t for t, m, _ in ledger.failures if m == mid)
        gaps += [b - a for a, b in itertools.pairwise(times)]
    if gaps and min(gaps) < minimum:
        problems.append(f"a redelivery {min(gaps):.3f} s after the failure (backoff {minimum}s)")
    if cpu > 0.1:
        problems.append(f"the idle service used {cpu:.0%} of a core")
    assert not problems, f"F7 on {rig.kind.name}: " + "; ".join(problems)

    return outcome(
        "F7 poison among good messages",
        rig.kind,
        producer,
        ledger,
        window=window(rig.kind, settings),
        recovery=None,
        recovery_limit=None,
        note=(
            f"{good} good, {len(poisoned)} poison: {dead_letters} dead letters after "
            f"{settings.max_attempts} attempts; retry gap ≥ {min(gaps):.2f} s; "
            f"idle CPU {cpu:.0%}"
        ),
        confirmed={mid: at for mid, at in producer.confirmed.items() if mid not in poisoned},
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rig", kinds("redis-stream", "nats-js"), indirect=True)
async def test_f7_poison(rig: Rig) -> None:
    """Messages that always fail, among good ones: each is tried ``max_attempts`` times
    (3) with the backoff between tries, then dead-lettered once with
    ``x-delivery-attempts`` 3; every good message is handled, and the service is idle
    afterwards (no hot loop). 300 + 5 in CI, 990 + 10 under ``make faults``."""
    good, poison = (990, 10) if FULL_RUN else (300, 5)
    check(await _poison(rig, good, poison))


# -- F8: malformed and oversized messages ------------------------------------------------------

SENTINEL = "SENTINEL-7f3a9c-PAYLOAD"
MAX_BODY = 64 * 1024


def _bad_messages() -> dict[str, tuple[bytes, str | None]]:
    """The bad messages by id: their body and content type; each holds ``SENTINEL``."""
    return {
        "bad-json": (b'{"n": 1, "secret": "' + SENTINEL.encode(), "application/json"),
        "bad-schema": (json.dumps({"n": SENTINEL}).encode(), "application/json"),
        "bad-pickle": (pickle.dumps({"n": 3, "s": SENTINEL}), "application/x-python-pickle"),
        "bad-msgpack": (
            # msgpack: a map {"n": ext type 42 holding SENTINEL}
            b"\x81\xa1n\xc7" + bytes([len(SENTINEL), 42]) + SENTINEL.encode(),
            "application/msgpack",
        ),
        "bad-size": (
            json.dumps({"n": 5, "pad": SENTINEL + "x" * (MAX_BODY + 1)}).encode(),
            "application/json",
        ),
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize("rig", kinds("redis-stream", "nats-js"), indirect=True)
async def test_f8_malformed_and_oversized(rig: Rig) -> None:
    """Invalid JSON, a schema violation, a pickle, a msgpack ext type and a body over
    ``max_body_bytes`` (64 KiB here), each among good messages: every bad one is
    dead-lettered on its first delivery (``x-delivery-attempts`` 1), its handler never
    runs, exactly one log line names it, its content is in no log, and the good ones
    are all handled."""
    await rig.start_broker()
    settings = rig.settings(dead_letter=True, max_body=MAX_BODY)
    ledger = rig.ledger()
    service = rig.service(settings, ledger, begin=1)
    await service.ready()
    bad = _bad_messages()
    options = rig.kind.publish_options()
    async with Producer(rig.kind, settings) as producer:
        await producer.run(range(10), rate=0, publishers=1)
        transport = producer.router.broker.transport
        for message_id, (body, content_type) in bad.items():
            raw = OutgoingMessage(
                channel=settings.channel,
                body=body,
                content_type=content_type,
                message_id=message_id,
                options=options,
            )
            await transport.publish(raw)  # past the producer's own size check
        await producer.run(range(10, 20), rate=0, publishers=1)

        def finished() -> bool:
            ledger.read()
            return set(producer.confirmed) <= ledger.handled.keys() and bad.keys() <= set(
                ledger.dead
            )

        await until(finished, "good handled, bad dead-lettered", 60, lambda: ledger.dead)
        await wait_done(rig.kind, settings, producer, ledger, timeout=30)
    ledger.read()
    log = service.log_text()
    assert service.alive(), service.tail()
    problems = []
    if SENTINEL in log:
        problems.append("a bad message's content is in the service's log")
    for message_id in bad:
        if ledger.dead.get(message_id) != ["1"]:
            problems.append(f"{message_id}: dead letters {ledger.dead.get(message_id)}")
        if message_id in ledger.begun:
            problems.append(f"{message_id}: the handler ran")
        lines = [line for line in log.splitlines() if message_id in line]
        if len(lines) != 1:
            problems.append(f"{message_id}: {len(lines)} log lines, not 1: {lines[:3]}")
    assert not problems, f"F8 on {rig.kind.name}: " + "; ".join(problems)
    check(
        outcome(
            "F8 malformed and oversized",
            rig.kind,
            producer,
            ledger,
            window=window(rig.kind, settings),
            recovery=None,
            recovery_limit=None,
            note=f"{len(bad)} bad messages dead-lettered on the first delivery, none logged",
        )
    )


# -- F9: a slow consumer under a flood ----------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "rig",
    kinds(
        full=ALL,
        intermittent=("kafka",),
        kafka="aiokafka's fetcher reads ahead of the consume loop, up to "
        "max_partition_fetch_bytes (1 MiB) per assigned partition whatever the prefetch, and "
        "keeps the decoded records: +20.2 MiB measured with 4 partitions and 8 KiB messages, "
        "limit +20 MiB (prefetch 20 x max_body_bytes); bounded by the fetch sizes, not by "
        "the prefetch",
    ),
    indirect=True,
)
async def test_f9_slow_consumer_flood(rig: Rig) -> None:
    """A handler that takes 200 ms (5 messages/s) under a flood of 8 KiB messages at
    about 400/s for 20 s. The service's resident memory stays within its baseline +
    prefetch x ``max_body_bytes`` (the broker keeps the backlog, not the process), and
    nothing is delivered twice (no redelivery storm: on JetStream the handler outlives
    ``ack_wait`` for the last messages of a pull batch, which the keepalive covers)."""
    prefetch = 20
    await rig.start_broker()
    settings = rig.settings(prefetch=prefetch)
    ledger = rig.ledger()
    service = rig.service(settings, ledger, sleep=0.2)
    await service.ready()
    pad = "x" * 8192

    def payload(n: int) -> dict[str, object]:
        return {"n": n, "pad": pad}

    async with Producer(rig.kind, settings, payload=payload) as producer:
        await producer.run(range(20), rate=0, publishers=4)  # warm-up
        await until(lambda: len(ledger.read().handled) >= 20, "warm-up", 30)
        assert service.pid is not None
        baseline = process_stats(service.pid)["rss"]
        limit = baseline + prefetch * settings.max_body
        flood = asyncio.create_task(producer.run(range(20, 8020), rate=400, publishers=20))
        peak = baseline
        deadline = time.monotonic() + 40
        while not flood.done() and time.monotonic() < deadline:
            peak = max(peak, process_stats(service.pid)["rss"])
            await asyncio.sleep(0.25)
        flood.cancel()
        await asyncio.gather(flood, return_exceptions=True)
        for _ in range(20):  # five seconds more of the backlog
            peak = max(peak, process_stats(service.pid)["rss"])
            await asyncio.sleep(0.25)
        ledger.read()
    assert service.alive(), service.tail()
    handled = len(ledger.handled)
    duplicates = sum(count - 1 for count in ledger.handled.values())
    result = Outcome(
        "F9 slow consumer under a flood",
        rig.kind.name,
        len(producer.confirmed),
        0,
        duplicates,
        0,
        None,
        None,
        note=(
            f"RSS +{(peak - baseline) / 2**20:.1f} MiB (limit +{(limit - baseline) / 2**20:g}); "
            f"{handled} handled, the backlog left in the broker (lost not measured)"
        ),
        lost_measured=False,
    )
    report.record(result)
    problems = result.problems()
    if peak > limit:
        problems.append(
            f"resident memory {peak / 2**20:.1f} MiB, limit {limit / 2**20:.1f} MiB "
            f"(baseline {baseline / 2**20:.1f} + {prefetch} x max_body_bytes)"
        )
    assert not problems, f"F9 on {rig.kind.name}: " + "; ".join(problems)
