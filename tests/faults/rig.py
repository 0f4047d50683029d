"""What every fault case is made of: its broker instance, services, ledger and temporary
folder (``Rig``), the parameters per transport (``kinds``) and the thresholds."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.faults import instances, report
from tests.faults.harness import Ledger, Outcome, Producer, Service
from tests.faults.kinds import Kind, Settings
from tests.faults.proc import process_stats

INSTANCES: dict[str, Callable[[], instances.Instance]] = {
    "redis": instances.Redis,
    "nats": instances.Nats,
    "kafka": instances.Kafka,
    "rabbit": instances.Rabbit,
}
FULL = pytest.mark.faults_full
#: Running under ``make faults`` (``FAULTS_FULL=1``): cases may run longer.
FULL_RUN = os.environ.get("FAULTS_FULL") == "1"
#: Broker-kill cases beyond CI: not Kafka, whose broker here (tansu) keeps its log in memory.
BROKER_KILLS = ("rabbit",)
CI_KINDS = ("redis-stream", "redis-list", "nats-js")
#: nats-server (2.9, one node, file storage) writes a consumer's acks to its file a while
#: after they arrive, and acks get no confirmation: a ``kill -9`` loses the latest, and
#: JetStream delivers those messages again. Measured here (a loaded 2-core machine): lost
#: acks of messages handled up to 0.17 s before the kill, up to 50 messages at a time.
UNWRITTEN_ACKS = 0.25
ISSUE_18 = "issue 18 (the core owns the consume loop): "
ISSUE_13 = "issue 13: "


def kinds(
    *names: str,
    full: tuple[str, ...] = ("kafka", "rabbit"),
    intermittent: tuple[str, ...] = (),
    **xfail: str,
) -> list[Any]:
    """Parameters for a case: ``names`` in CI, ``full`` only under ``make faults``;
    ``xfail`` maps a transport (``redis_list``) to the reason it fails today: strict,
    so the fix must remove the marker, except for the transports in ``intermittent``,
    where it fails in some runs only (strict would fail the others)."""
    params = []
    for name in (*names, *full):
        marks: list[Any] = [] if name in names else [FULL]
        reason = xfail.get(name.replace("-", "_"))
        if reason:
            strict = name not in intermittent
            marks.append(pytest.mark.xfail(strict=strict, reason=reason))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


class Rig:
    """One case's broker instance, services, ledger and temporary folder."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="fsf-"))  # short: Unix socket paths
        self.broker = INSTANCES[kind.broker]()
        self.services: list[Service] = []
        self.restarts: list[float] = []  # when the restarted broker answered
        self.kills: list[float] = []  # when the broker was killed -9

    def settings(self, **changes: Any) -> Settings:
        channel = f"faults.{uuid.uuid4().hex[:8]}"
        return replace(Settings(self.kind.name, self.broker.url, channel), **changes)

    def service(self, settings: Settings, ledger: Ledger, **env: Any) -> Service:
        service = Service(self.dir, settings, ledger.path, **env)
        self.services.append(service)
        service.start()
        return service

    def ledger(self, name: str = "ledger") -> Ledger:
        return Ledger(self.dir / name)

    async def start_broker(self) -> float:
        try:
            return await asyncio.to_thread(self.broker.start)
        except instances.StartFailed as exc:
            pytest.fail(f"the fault suite's own {self.kind.broker} did not start: {exc}")

    async def kill_broker(self, down: float = 3.0, sig: int = signal.SIGKILL) -> None:
        """``kill -9`` the broker (or send ``sig``: SIGTERM for a graceful stop), keep it
        down ``down`` seconds, start it again."""
        if sig == signal.SIGKILL:
            self.kills.append(time.time())
        await asyncio.to_thread(self.broker.kill, sig)
        await asyncio.sleep(down)
        self.restarts.append(await self.start_broker())

    def acks_lost_in_kills(self, ledger: Ledger) -> int:
        """Duplicates a ``kill -9`` may add beyond the in-flight window: on JetStream, the
        messages handled in the ``UNWRITTEN_ACKS`` seconds before each kill."""
        if self.kind.broker != "nats":
            return 0
        handled = [at for at, _, _ in ledger.read().handlings]
        return sum(1 for kill in self.kills for at in handled if kill - UNWRITTEN_ACKS < at <= kill)

    def close(self) -> None:
        for service in self.services:
            service.kill()
            # Captured: pytest shows it when the case failed.
            print(f"--- {service.log.name}:\n{service.tail()}")
        print(f"--- {self.kind.broker} log:\n{self.broker.tail()}")
        self.broker.close()
        keep = os.environ.get("FAULTS_KEEP")  # a folder: each case's ledger and logs go there
        if keep:
            target = Path(keep) / f"{self.kind.name}-{time.time():.0f}"
            shutil.copytree(
                self.dir, target, ignore=shutil.ignore_patterns("*.sock"), dirs_exist_ok=True
            )
            (target / "kills-and-restarts").write_text(repr((self.kills, self.restarts)))
        shutil.rmtree(self.dir, ignore_errors=True)


async def until(
    condition: Callable[[], bool], what: str, timeout: float, state: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s: {state()}")
        await asyncio.sleep(0.05)


def progress(producer: Producer, ledger: Ledger) -> Callable[[], str]:
    return lambda: f"{len(producer.confirmed)} confirmed, {len(ledger.handled)} handled"


def check(result: Outcome) -> None:
    report.record(result)
    problems = result.problems()
    assert not problems, f"{result.case} on {result.kind}: " + "; ".join(problems)


def window(kind: Kind, settings: Settings, faults: int = 1, broker_kills: int = 0) -> int:
    """Duplicates allowed: the in-flight window (``prefetch``) per fault.

    Where acks get no confirmation (JetStream, RabbitMQ) a broker kill also loses the acks
    of the batch before the one in hand: two batches per broker kill (JetStream may lose
    more: ``Rig.acks_lost_in_kills``). JetStream gets one
    batch more: with two replicas on one pull consumer and ``ack_wait`` 3 s, the transport
    before "NATS on the core's consume seam" delivered the first batch twice to the same
    replica a few ms apart, before any fault (not diagnosed)."""
    if kind.broker == "nats":
        return settings.prefetch * (faults + broker_kills + 1)
    if kind.broker == "rabbit":
        return settings.prefetch * (faults + broker_kills)
    return settings.prefetch * faults


def recovery_limit(kind: Kind, extra: float = 0.0) -> float:
    return kind.reconnect_cap + 5.0 + extra


async def idle_cpu(service: Service, seconds: float = 3.0) -> float:
    """The share of one core the service used over ``seconds`` (a hot loop shows here)."""
    assert service.pid is not None
    before = process_stats(service.pid)["cpu"]
    await asyncio.sleep(seconds)
    return (process_stats(service.pid)["cpu"] - before) / seconds
