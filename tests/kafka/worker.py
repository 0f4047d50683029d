"""A consumer process for the Kafka tests that need several processes or a hard kill::

    python -m tests.kafka.worker TOPIC GROUP OUT [--delay SECONDS] [--workers N]

Appends the body of every message it handled (an int) as a line to OUT, prints
``ready`` once its group gave it partitions, and closes gracefully on SIGTERM
(committing what it finished). SIGKILL leaves whatever was not committed to the group.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TextIO

from fastapi_stream.kafka import KafkaRouter

SERVERS = "127.0.0.1:9092"


async def main(args: argparse.Namespace, out: TextIO) -> None:
    router = KafkaRouter(
        SERVERS, session_timeout_ms=1000, heartbeat_interval_ms=250, graceful_timeout=5.0
    )

    @router.subscriber(args.topic, group_id=args.group, max_workers=args.workers)
    async def handle(n: int) -> None:
        if args.delay:
            await asyncio.sleep(args.delay)
        out.write(f"{n}\n")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with router.broker:
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("out")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=1)
    arguments = parser.parse_args()
    with open(arguments.out, "a", buffering=1) as lines:  # a line per message, flushed
        asyncio.run(main(arguments, lines))
