"""A consumer process for ``test_mqtt.py``'s kill test: ``python -m tests.mqtt.consumer
URL CLIENT_ID TOPIC MARKER``. It writes ``ready`` to MARKER once subscribed, then
``started <body>`` when its handler starts, and never finishes a handler: the test kills
it with SIGKILL while the message is unacknowledged."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fastapi_stream.mqtt import MqttRouter


def mark(marker: Path, text: str) -> None:
    marker.write_text(text)


async def main(url: str, client_id: str, topic: str, marker: Path) -> None:
    router = MqttRouter(url, client_id=client_id, session_expiry=60)

    @router.subscriber(topic, group="killed")
    async def handle(n: int) -> None:
        mark(marker, f"started {n}")
        await asyncio.Event().wait()  # killed here

    async with router.broker:
        mark(marker, "ready")
        await asyncio.Event().wait()


if __name__ == "__main__":
    url, client_id, topic, marker = sys.argv[1:5]
    asyncio.run(main(url, client_id, topic, Path(marker)))
