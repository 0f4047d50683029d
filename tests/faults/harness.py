"""The pieces a fault case is made of: the consumer service as a process, a producer with
retry, the ledger oracle and the broker-side check that nothing is left unsettled.

All times are wall-clock (``time.time()``), shared by the test process and the services.
Every wait here is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fastapi_stream import BrokerNotConnected, PublishError, TransportError
from tests.faults.instances import end
from tests.faults.kinds import KINDS, Kind, Settings, stream_name

__all__ = ["Ledger", "Outcome", "Producer", "Service", "drained", "wait_done"]

ROOT = Path(__file__).resolve().parents[2]


# -- the consumer service ------------------------------------------------------------------


class Service:
    """``uvicorn tests.faults.service:app`` on a Unix socket, with the case's settings."""

    def __init__(self, workdir: Path, settings: Settings, ledger: Path, **env: Any) -> None:
        self.workdir = workdir
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FAULTS_KIND": settings.kind,
            "FAULTS_URL": settings.url,
            "FAULTS_CHANNEL": settings.channel,
            "FAULTS_GROUP": settings.group,
            "FAULTS_PREFETCH": str(settings.prefetch),
            "FAULTS_WORKERS": str(settings.workers),
            "FAULTS_MAX_ATTEMPTS": str(settings.max_attempts),
            "FAULTS_BACKOFF": str(settings.backoff),
            "FAULTS_MAX_BACKOFF": str(settings.max_backoff),
            "FAULTS_IDLE": str(settings.idle),
            "FAULTS_DEAD_LETTER": "1" if settings.dead_letter else "0",
            "FAULTS_GRACEFUL": str(settings.graceful),
            "FAULTS_MAX_BODY": str(settings.max_body),
            "FAULTS_HEARTBEAT": "" if settings.heartbeat is None else str(settings.heartbeat),
            "FAULTS_LEDGER": str(ledger),
            **{f"FAULTS_{key.upper()}": str(value) for key, value in env.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.runs = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.runs += 1
        self.socket = self.workdir / f"svc-{id(self) % 10000}-{self.runs}.sock"
        self.log = self.workdir / f"svc-{id(self) % 10000}-{self.runs}.log"
        command = [sys.executable, "-m", "uvicorn", "tests.faults.service:app"]
        command += ["--uds", str(self.socket), "--log-level", "warning", "--no-access-log"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started_at = time.time()

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/health/ready`` answers 200; fail with the service's log if not."""
        deadline = time.monotonic() + timeout
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise AssertionError(f"the service exited:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/health/ready", timeout=2.0)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"the service was not ready within {timeout:.0f}s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def get(self, path: str) -> httpx.Response:
        """``GET path`` on the service (raises httpx's errors)."""
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.get(path, timeout=5.0)

    async def stats(self) -> dict[str, float]:
        """The service's resident memory (bytes), open fds, asyncio tasks and CPU seconds."""
        response = await self.get("/faults/stats")
        response.raise_for_status()
        stats: dict[str, float] = response.json()
        return stats

    async def is_ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (await self.get("/health/ready")).status_code == 200
        return False

    def first_log_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first line the service logged after it (its
        lines start with their time)."""
        for line in self.log_text().splitlines():
            stamp = line.split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                if float(stamp) >= moment:
                    return float(stamp) - moment
        return None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process this object started, by its PID, and reap it."""
        process, self.process = self.process, None
        end(process, sig)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except (OSError, AttributeError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# -- the producer ----------------------------------------------------------------------------


class Producer:
    """Publishes numbered messages with ids ``<prefix>-<n>``; a publish that raises is
    tried again with the same id until it is confirmed. ``confirmed`` holds the ids the
    broker confirmed, with the time of each confirmation."""

    def __init__(
        self,
        kind: Kind,
        settings: Settings,
        prefix: str = "m",
        payload: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        self.kind = kind
        self.settings = settings
        self.prefix = prefix
        #: The body of message ``n`` (``{"n": n}`` unless given).
        self.payload = payload or (lambda n: {"n": n})
        self.router = kind.router(settings)
        self.confirmed: dict[str, float] = {}
        self.failures = 0
        self.errors: Counter[str] = Counter()

    async def __aenter__(self) -> Producer:
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.router.broker.connect()
                return self
            except TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(20):
                await self.router.broker.close()

    async def publish(self, n: int, deadline: float) -> None:
        message_id = f"{self.prefix}-{n}"
        options = self.kind.publish_options()
        while True:
            try:
                await self.router.broker.publish(
                    self.payload(n), self.settings.channel, message_id=message_id, **options
                )
                self.confirmed[message_id] = time.time()
                return
            except (PublishError, TransportError, BrokerNotConnected) as exc:
                self.failures += 1
                self.errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def run(self, numbers: Iterable[int], rate: float, publishers: int = 10) -> None:
        """Publish ``numbers`` with ``publishers`` concurrent publishers, at about ``rate``
        messages per second in all; each message retried for up to 120 s."""
        pending = list(numbers)
        pending.reverse()
        interval = publishers / rate if rate else 0.0
        deadline = time.monotonic() + 120

        async def publisher() -> None:
            while pending:
                await self.publish(pending.pop(), deadline)
                if interval:
                    await asyncio.sleep(interval)

        await asyncio.gather(*(publisher() for _ in range(publishers)))


# -- the ledger oracle ---------------------------------------------------------------------


@dataclass
class Ledger:
    """What the handlers saw, read from the append-only ledger file as it grows."""

    path: Path
    handled: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    #: (time, message id, pid) of every successful handling, in file order.
    handlings: list[tuple[float, str, int]] = field(default_factory=list)
    #: (time, message id, pid) of every failed attempt, in file order.
    failures: list[tuple[float, str, int]] = field(default_factory=list)
    #: Handlers started (``B`` lines, with ``FAULTS_BEGIN=1``): message id -> (time, pid).
    begun: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    #: Dead letters received: message id -> the ``x-delivery-attempts`` of each.
    dead: dict[str, list[str]] = field(default_factory=dict)
    _offset: int = 0

    def read(self) -> Ledger:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return self
        end = data.rfind(b"\n") + 1  # a line is complete once its newline is written
        self._offset += end
        for line in data[:end].decode().splitlines():
            mark, message_id, pid, at, *rest = line.split()
            if mark == "H":
                self.handled[message_id] += 1
                self.handlings.append((float(at), message_id, int(pid)))
            elif mark == "B":
                self.begun.setdefault(message_id, []).append((float(at), int(pid)))
            elif mark == "D":
                self.dead.setdefault(message_id, []).append(rest[0])
            else:
                self.failed[message_id] += 1
                self.failures.append((float(at), message_id, int(pid)))
        return self

    def first_after(self, moment: float, pid: int | None = None) -> float | None:
        """Seconds from ``moment`` to the first handling after it (by ``pid`` if given)."""
        times = [t for t, _, p in self.handlings if t >= moment and (pid is None or p == pid)]
        return min(times) - moment if times else None

    def caught_up(self, confirmed: Mapping[str, float], moment: float) -> float | None:
        """Seconds from ``moment`` until every message confirmed before it was handled."""
        before = {mid for mid, at in confirmed.items() if at < moment}
        first: dict[str, float] = {}
        for t, mid, _ in self.handlings:
            if mid in before and mid not in first:
                first[mid] = t
        if before - first.keys():
            return None
        return max(0.0, max(first.values(), default=moment) - moment)


@dataclass
class Outcome:
    """One case on one transport, as the figures table shows it."""

    case: str
    kind: str
    confirmed: int
    lost: int
    duplicates: int
    window: int
    recovery: float | None
    recovery_limit: float | None
    note: str = ""
    missing: list[str] = field(default_factory=list)
    #: (message id, [(time, pid) of each handling]) of some duplicated messages
    repeated: list[tuple[str, list[tuple[float, int]]]] = field(default_factory=list)
    #: False where the case does not wait for the backlog (F9): lost is not measured.
    lost_measured: bool = True
    #: F10: seconds from the fault to the service's first log line about it, and the limit.
    detection: float | None = None
    detection_limit: float | None = None

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"lost {self.lost} of {self.confirmed}: {self.missing[:10]}")
        if self.duplicates > self.window:
            found.append(
                f"{self.duplicates} duplicates, more than the window of {self.window}: "
                f"{self.repeated}"
            )
        if self.recovery_limit is not None and (
            self.recovery is None or self.recovery > self.recovery_limit
        ):
            found.append(f"recovery {self.recovery} s, limit {self.recovery_limit:.1f} s")
        if self.detection_limit is not None and (
            self.detection is None or self.detection > self.detection_limit
        ):
            found.append(f"noticed after {self.detection} s, limit {self.detection_limit:g} s")
        return found


def outcome(
    case: str,
    kind: Kind,
    producer: Producer,
    ledger: Ledger,
    window: int,
    recovery: float | None,
    recovery_limit: float | None,
    note: str = "",
    confirmed: Mapping[str, float] | None = None,
) -> Outcome:
    """The outcome of a case: ``confirmed`` (the producer's, unless given) against what
    the ledger saw."""
    ledger.read()
    confirmed = producer.confirmed if confirmed is None else confirmed
    missing = sorted(set(confirmed) - set(ledger.handled))
    duplicates = sum(count - 1 for count in ledger.handled.values() if count > 1)
    repeated = [mid for mid, count in ledger.handled.items() if count > 1][:20]
    seen = {
        mid: [(round(t, 3), pid) for t, m, pid in ledger.handlings if m == mid] for mid in repeated
    }
    return Outcome(
        case,
        kind.name,
        len(confirmed),
        len(missing),
        duplicates,
        window,
        None if recovery is None else round(recovery, 2),
        recovery_limit,
        note,
        missing,
        list(seen.items()),
    )


# -- the broker side ---------------------------------------------------------------------------


async def drained(kind: Kind, settings: Settings) -> bool:
    """True when the broker holds nothing unsettled for the case's subscription: no
    queued item or pending entry, nothing in a processing list, nothing un-acked."""
    if kind.broker == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.url, socket_timeout=2)
        try:
            if kind.name == "redis-list":
                if await client.llen(settings.channel):
                    return False
                async for key in client.scan_iter(f"{settings.channel}:processing:*"):
                    if await client.llen(key):
                        return False
                return True
            for group in await client.xinfo_groups(settings.channel):
                if group["name"].decode() == settings.group:
                    return bool(group["pending"] == 0 and group.get("lag") == 0)
            return False
        finally:
            await client.aclose()
    if kind.broker == "nats":
        import nats

        connection = await nats.connect(settings.url, connect_timeout=2, allow_reconnect=False)
        try:
            info = await connection.jetstream().consumer_info(
                stream_name(settings.channel), settings.group
            )
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)
        finally:
            await connection.close()
    return True  # Kafka and RabbitMQ: the ledger alone decides


async def wait_done(
    kind: Kind,
    settings: Settings,
    producer: Producer,
    ledger: Ledger,
    timeout: float,
    quiet: float = 1.0,
) -> None:
    """Wait until every confirmed message was handled and the broker holds nothing
    unsettled (then ``quiet`` seconds more, for late redeliveries), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ledger.read()
        if set(producer.confirmed) <= ledger.handled.keys():
            with contextlib.suppress(Exception):
                if await drained(kind, settings):
                    await asyncio.sleep(quiet)
                    return
        await asyncio.sleep(0.2)


def kind_of(name: str) -> Kind:
    return KINDS[name]
