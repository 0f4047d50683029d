"""What happens to a message after its handler ran: the ack policy and the retry budget."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = ["AckPolicy", "Retry"]


class AckPolicy(enum.Enum):
    """When a subscriber settles its messages with the broker."""

    #: At-least-once (the default): ack after the handler succeeded; on an error, retry
    #: with backoff per the subscriber's :class:`Retry`, then reject (or dead-letter).
    ACK = "ack"
    #: At-most-once: ack before the handler runs. A crash or an error loses the message.
    ACK_FIRST = "ack_first"
    #: The handler settles with ``msg.ack()``/``nack()``/``reject()``; a message it leaves
    #: unsettled after an error is retried like under ``ACK``.
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Retry:
    """How often a failing message is delivered, and how long to wait in between.

    ``max_attempts`` counts deliveries: ``Retry(max_attempts=3)`` runs the handler at most
    three times. The wait before delivery ``n + 1`` is ``backoff * multiplier ** (n - 1)``,
    capped at ``max_backoff``, plus or minus ``jitter`` (a fraction).
    """

    max_attempts: int = 3
    backoff: float = 0.5
    multiplier: float = 2.0
    max_backoff: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("Retry(max_attempts=...) must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("Retry backoff must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("Retry(jitter=...) is a fraction in [0, 1)")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before delivering again a message whose ``attempt``-th delivery
        failed."""
        base = min(self.backoff * self.multiplier ** max(attempt - 1, 0), self.max_backoff)
        if self.jitter and base:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return base


#: Used when a subscriber says nothing: three deliveries, 0.5 s then 1 s apart.
DEFAULT_RETRY = Retry()
#: ``retry=False``: one delivery, then reject.
NO_RETRY = Retry(max_attempts=1)
