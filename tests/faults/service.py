"""The consumer service under test, run as its own process under uvicorn::

    FAULTS_KIND=redis-stream FAULTS_URL=redis://127.0.0.1:6391/0 FAULTS_CHANNEL=f1 \\
    FAULTS_LEDGER=/tmp/ledger uvicorn tests.faults.service:app --uds /tmp/svc.sock

A FastAPI app with one subscriber on the private broker. Before its handler returns it
appends ``H <message id> <pid> <time> <attempt> <delivery>`` to the ledger (``F ...`` for an attempt
it fails on purpose), one ``write()`` on a file opened with ``O_APPEND``: a line written
survives a ``kill -9`` of this process, and several replicas share one ledger.

Behaviour from the environment: ``FAULTS_SLEEP`` (seconds per handler),
``FAULTS_FAIL_FIRST`` (the first N attempts of each message raise), ``FAULTS_PREFETCH``,
``FAULTS_WORKERS`` (``max_workers``),
``FAULTS_GROUP``, ``FAULTS_IDLE``, ``FAULTS_MAX_ATTEMPTS``, ``FAULTS_BACKOFF``,
``FAULTS_MAX_BACKOFF``.
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import StreamMessage
from tests.faults.kinds import KINDS, Settings

__all__ = ["app"]


class Item(BaseModel):
    n: int


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
    )


settings = _settings()
kind = KINDS[settings.kind]
sleep = float(os.environ.get("FAULTS_SLEEP", "0"))
fail_first = int(os.environ.get("FAULTS_FAIL_FIRST", "0"))
ledger = os.open(os.environ["FAULTS_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
pid = os.getpid()
attempts: dict[str, int] = {}

router = kind.router(settings)
args, options = kind.subscriber_options(settings)


@router.subscriber(*args, **options)
async def handle(item: Item, message: StreamMessage) -> None:
    message_id = message.message_id or f"n-{item.n}"
    attempt = attempts[message_id] = attempts.get(message_id, 0) + 1
    if sleep:
        await asyncio.sleep(sleep)
    mark = "F" if attempt <= fail_first else "H"
    delivery = message.delivery_attempt or 0  # the broker's count, where it keeps one
    line = f"{mark} {message_id} {pid} {time.time():.6f} {attempt} {delivery}\n"
    os.write(ledger, line.encode())
    if mark == "F":
        raise Injected(f"attempt {attempt} of {message_id} fails on purpose")


app = FastAPI()
app.include_router(router)
