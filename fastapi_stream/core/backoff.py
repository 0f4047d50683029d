"""One backoff for everything that talks to a broker again after it failed.

Connecting at startup, fetching, settling and redelivering all wait the same way after an
error: doubling from ``first`` up to ``cap`` seconds, with jitter, one log line per wait
and one line when the broker answers again. A router takes a :class:`Backoff` as
``reconnect=``; the core applies it to every transport alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

__all__ = ["Backoff", "Reconnecting"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before trying a broker again: ``first`` seconds after the first
    failure, doubling (``multiplier``) up to ``cap``, plus or minus ``jitter`` (a fraction)
    so that many consumers do not come back in step."""

    first: float = 0.1
    cap: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first or self.multiplier < 1:
            raise ValueError("Backoff needs 0 < first <= cap and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("Backoff(jitter=...) is a fraction in [0, 1)")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (1 for the first)."""
        base = min(self.first * self.multiplier ** max(failures - 1, 0), self.cap)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return base


class Reconnecting:
    """The state of one thing that retries with a :class:`Backoff`: ``await failed(exc)``
    logs and waits, ``succeeded()`` logs the recovery once."""

    __slots__ = ("backoff", "failures", "logger", "what")

    def __init__(self, what: str, backoff: Backoff, logger: logging.Logger) -> None:
        self.what = what
        self.backoff = backoff
        self.logger = logger
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    async def failed(self, exc: BaseException) -> None:
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        self.logger.warning("%s failed (%s); trying again in %.1fs", self.what, _reason(exc), delay)
        await asyncio.sleep(delay)

    def succeeded(self) -> None:
        if self.failures:
            self.logger.info("%s recovered after %d failure(s)", self.what, self.failures)
            self.failures = 0


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
