"""Helpers for the MQTT tests: unique topics, a raw client of another library (aiomqtt,
on paho) and a Mosquitto of the tests' own on port 1885, killed and started by PID."""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import aiomqtt
import pytest

from tests.faults.instances import Instance

URL = "mqtt://127.0.0.1:1883"
OWN_PORT = 1885


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def raw() -> AsyncIterator[aiomqtt.Client]:
    """A plain MQTT 5 client of another library, connected to the shared Mosquitto."""
    async with aiomqtt.Client(
        "127.0.0.1",
        1883,
        identifier=f"fs-raw-{uuid.uuid4().hex[:8]}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        yield client


class Mosquitto(Instance):
    """A Mosquitto of a test's own on ``127.0.0.1:1885`` with its data in a temporary
    folder (``kill()`` is SIGKILL to the PID it started, ``start()`` brings it back on the
    same port and data). Sessions are saved every second or two (``autosave_interval
    1``): a kill loses what changed since the last save (see :meth:`saved_since`)."""

    name = "mosquitto"
    port = OWN_PORT

    def __init__(self) -> None:
        super().__init__()
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n" + ("user root\n" if os.geteuid() == 0 else "")
            # As root, Mosquitto would switch to the user "mosquitto", who cannot write here.
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        return [binary, "-c", str(self.config)]

    def answers(self, sock: socket.socket) -> bool:
        # CONNECT (MQTT 3.1.1, clean session, empty client id): a broker answers CONNACK.
        sock.sendall(bytes.fromhex("100c00044d5154540402003c0000"))
        return sock.recv(4).startswith(b"\x20\x02")

    def saved_since(self, moment: float) -> bool:
        """Whether the broker saved its sessions to disk after ``moment`` (``time.time()``)."""
        path = self.dir / "mosquitto.db"
        return path.exists() and path.stat().st_mtime > moment


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    instance = Mosquitto()
    instance.start()
    try:
        yield instance
    finally:
        instance.close()
