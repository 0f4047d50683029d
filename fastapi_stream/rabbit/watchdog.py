"""A watchdog for a RabbitMQ connection that goes silent without closing.

A peer or a firewall that drops a flow leaves the socket open: nothing arrives, and
nothing fails. aiormq gives up on such a connection only after 3 x (heartbeat + 1) seconds
without a frame (63 s with our default heartbeat of 20 s, 183 s with aio-pika's 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import parse_qs, urlsplit

import aiormq
from aio_pika.abc import AbstractRobustConnection

from fastapi_stream.core.errors import ConfigurationError, reason

__all__ = ["DEFAULT_HEARTBEAT", "Watchdog", "heartbeat_of"]

logger = logging.getLogger("fastapi_stream.rabbit")

#: The AMQP heartbeat in seconds, unless the URL sets one (``?heartbeat=10``; 0: none).
DEFAULT_HEARTBEAT = 20


def heartbeat_of(url: str) -> int:
    """The heartbeat the connection to ``url`` asks for: the URL's, else the default."""
    value = parse_qs(urlsplit(url).query).get("heartbeat", [str(DEFAULT_HEARTBEAT)])[0]
    try:
        heartbeat = int(value)
    except ValueError:
        heartbeat = -1
    if heartbeat < 0:
        raise ConfigurationError(
            f"heartbeat={value!r} in the RabbitMQ URL: give whole seconds (0 for none)"
        )
    return heartbeat


class Watchdog:
    """Every half heartbeat, asks the broker a question on the connection (a passive
    declare of ``amq.direct``, on a channel of its own); with no answer within a
    heartbeat, closes the connection, and aio-pika reconnects. A connection RabbitMQ
    blocked (a memory or disk alarm) answers nothing, so it is not asked then."""

    def __init__(self, connection: AbstractRobustConnection, heartbeat: int, broker: str) -> None:
        self.connection, self.heartbeat, self.broker = connection, heartbeat, broker
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._task = asyncio.create_task(self._run(), name=f"watchdog {broker}")

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:  # asks at once: its channel is open from the start, not later
            await self._check()
            await asyncio.sleep(self.heartbeat / 2)

    async def _check(self) -> None:
        underlay = self.connection.transport  # None while aio-pika reconnects
        amqp = None if underlay is None else underlay.connection
        if amqp is None or amqp.is_closed or await self._answers(amqp):
            return
        logger.warning(
            "RabbitMQ at %s did not answer within the %ds heartbeat; reconnecting",
            self.broker,
            self.heartbeat,
        )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.heartbeat):
                await amqp.close(ConnectionError("no answer within the heartbeat"))

    async def _answers(self, amqp: aiormq.abc.AbstractConnection) -> bool:
        """Whether ``amqp`` answers within a heartbeat, or cannot be asked now (blocked,
        or closed meanwhile: aio-pika reconnects by itself)."""
        try:
            async with asyncio.timeout(self.heartbeat):
                await amqp.ready()
        except TimeoutError:
            return True  # blocked: asked again once unblocked
        try:
            async with asyncio.timeout(self.heartbeat):
                channel = self._channel
                if channel is None or channel.connection is not amqp or channel.is_closed:
                    self._channel = channel = await amqp.channel()
                await channel.exchange_declare("amq.direct", passive=True)
        except TimeoutError:
            return amqp.is_closed
        except Exception as exc:
            logger.debug("watchdog of %s: %s", self.broker, reason(exc))
        return True
