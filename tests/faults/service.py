"""The consumer service under test, run as its own process under uvicorn::

    FAULTS_KIND=redis-stream FAULTS_URL=redis://127.0.0.1:6391/0 FAULTS_CHANNEL=f1 \\
    FAULTS_LEDGER=/tmp/ledger uvicorn tests.faults.service:app --uds /tmp/svc.sock

A FastAPI app with one subscriber on the private broker. Before its handler returns it
appends ``H <message id> <pid> <time> <attempt> <delivery>`` to the ledger (``F ...`` for an attempt
it fails on purpose), one ``write()`` on a file opened with ``O_APPEND``: a line written
survives a ``kill -9`` of this process, and several replicas share one ledger.

Behaviour from the environment: ``FAULTS_SLEEP`` (seconds per handler),
``FAULTS_FAIL_FIRST`` (the first N attempts of each message raise), ``FAULTS_MAX_SLEEP``
(caps a message's own ``sleep``), ``FAULTS_BEGIN`` (also append ``B ...`` when a handler
starts), ``FAULTS_PREFETCH``, ``FAULTS_WORKERS`` (``max_workers``), ``FAULTS_GROUP``,
``FAULTS_IDLE``, ``FAULTS_MAX_ATTEMPTS``, ``FAULTS_BACKOFF``, ``FAULTS_MAX_BACKOFF``,
``FAULTS_DEAD_LETTER`` (dead letters go to ``<channel>.dlq``, whose subscriber appends
``D <message id> <pid> <time> <x-delivery-attempts> <reason length>``),
``FAULTS_GRACEFUL``, ``FAULTS_MAX_BODY``, ``FAULTS_HEARTBEAT``.

A message may carry its own behaviour: ``{"n": 1, "poison": true}`` fails every attempt,
``{"n": 1, "sleep": 30}`` sleeps that long (at most ``FAULTS_MAX_SLEEP``).
``GET /faults/stats`` answers the process's resident memory, open fds and asyncio tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import StreamMessage
from fastapi_stream.core.broker import DEFAULT_MAX_BODY_BYTES
from tests.faults.kinds import KINDS, Settings
from tests.faults.proc import process_stats

__all__ = ["app"]


class Item(BaseModel):
    n: int
    poison: bool = False
    sleep: float | None = None


class Injected(Exception):
    """The failure ``FAULTS_FAIL_FIRST`` asks for."""


def _settings() -> Settings:
    env = os.environ
    return Settings(
        kind=env["FAULTS_KIND"],
        url=env["FAULTS_URL"],
        channel=env["FAULTS_CHANNEL"],
        group=env.get("FAULTS_GROUP", "faults"),
        prefetch=int(env.get("FAULTS_PREFETCH", "10")),
        workers=int(env.get("FAULTS_WORKERS", "1")),
        max_attempts=int(env.get("FAULTS_MAX_ATTEMPTS", "5")),
        backoff=float(env.get("FAULTS_BACKOFF", "0.2")),
        max_backoff=float(env.get("FAULTS_MAX_BACKOFF", "2.0")),
        idle=float(env.get("FAULTS_IDLE", "3.0")),
        dead_letter=env.get("FAULTS_DEAD_LETTER") == "1",
        graceful=float(env.get("FAULTS_GRACEFUL", "15.0")),
        max_body=int(env.get("FAULTS_MAX_BODY", str(DEFAULT_MAX_BODY_BYTES))),
        heartbeat=float(env["FAULTS_HEARTBEAT"]) if env.get("FAULTS_HEARTBEAT") else None,
    )


# Every log line starts with its time, so a case can tell when the service noticed a fault.
logging.basicConfig(format="%(created).3f %(levelname)s %(name)s: %(message)s")

settings = _settings()
kind = KINDS[settings.kind]
sleep = float(os.environ.get("FAULTS_SLEEP", "0"))
fail_first = int(os.environ.get("FAULTS_FAIL_FIRST", "0"))
max_sleep = float(os.environ.get("FAULTS_MAX_SLEEP", "3600"))
begin = os.environ.get("FAULTS_BEGIN") == "1"
ledger = os.open(os.environ["FAULTS_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
pid = os.getpid()
attempts: dict[str, int] = {}

router = kind.router(settings)
args, options = kind.subscriber_options(settings)


@router.subscriber(*args, **options)
async def handle(item: Item, message: StreamMessage) -> None:
    message_id = message.message_id or f"n-{item.n}"
    attempt = attempts[message_id] = attempts.get(message_id, 0) + 1
    if begin:
        os.write(ledger, f"B {message_id} {pid} {time.time():.6f} {attempt} 0\n".encode())
    pause = min(max_sleep, sleep if item.sleep is None else item.sleep)
    if pause:
        await asyncio.sleep(pause)
    mark = "F" if attempt <= fail_first or item.poison else "H"
    delivery = message.delivery_attempt or 0  # the broker's count, where it keeps one
    line = f"{mark} {message_id} {pid} {time.time():.6f} {attempt} {delivery}\n"
    os.write(ledger, line.encode())
    if mark == "F":
        raise Injected(f"attempt {attempt} of {message_id} fails on purpose")


if settings.dead_letter:
    dead_args, dead_options = kind.subscriber_options(
        replace(settings, channel=settings.dead_letter_channel, group="dlq")
    )

    # Its own dead letter would be itself: it takes any size, and never fails.
    dead_options["max_body_bytes"] = 2**30

    @router.subscriber(*dead_args, **dead_options)
    async def dead(message: StreamMessage) -> None:
        headers = message.headers
        reason = headers.get("x-dead-letter-reason", "")
        line = (
            f"D {message.message_id} {pid} {time.time():.6f} "
            f"{headers.get('x-delivery-attempts', '?')} {len(reason)}\n"
        )
        os.write(ledger, line.encode())


app = FastAPI()
app.include_router(router)


@app.get("/faults/stats")
async def stats() -> dict[str, float]:
    return {**process_stats(pid), "tasks": len(asyncio.all_tasks())}
