"""The consume loop: the one place where messages come in, for every broker.

A :class:`ConsumeLoop` drives one subscriber's :class:`~fastapi_stream.core.transport.
Subscription`::

    fetch ─► handle (inline, in workers, or as one batch) ─► publish the results together
          ─► settle together ─► fetch ...

and beside it keeps the messages the handlers nacked with a delay, handing each back to
the subscription when its time comes (and again after the broker is back, if it was
down then). Its rules hold for every transport alike:

* **stop interrupts a fetch, never a delivery**: at stop a waiting fetch (or a backoff
  wait) is cancelled; messages being handled finish within the graceful timeout, or are
  cancelled and left unsettled, so the broker delivers them again;
* **results before settlements**: what the handlers of a delivery returned is published
  in one ``publish_many`` call, and the delivery's acks go out only once the broker
  confirmed it; if it did not, those messages are handled again (at-least-once);
* **one backoff**: a fetch, settle or redelivery that fails waits as the broker's
  :class:`~fastapi_stream.core.backoff.Backoff` says, with one log line per wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi_stream.core.backoff import Reconnecting
from fastapi_stream.core.message import Settlement, StreamMessage
from fastapi_stream.core.transport import Subscription

if TYPE_CHECKING:
    from fastapi_stream.core.broker import StreamBroker
    from fastapi_stream.core.subscriber import Subscriber

__all__ = ["ConsumeLoop"]

#: A fetch that neither returns nor raises for this long is taken for a dead connection.
FETCH_TIMEOUT = 30.0
#: When a delivery's results could not be published, its messages are handled again after:
RESULTS_RETRY_DELAY = 1.0


class _Job:
    """One delivery (a fetched batch handled inline, one message in a worker, or one
    batch-handler call): the results its handlers returned and its settlements, sent to
    the broker together at its end. Lists are made only when needed: on the test broker
    this runs for every message."""

    __slots__ = ("acked", "again", "loop", "owner", "rejected", "results")

    def __init__(self, loop: ConsumeLoop, messages: Sequence[StreamMessage]) -> None:
        self.loop = loop
        self.owner = loop.broker
        self.results: list[Any] | None = None
        self.acked: list[StreamMessage] | None = None
        self.rejected: list[StreamMessage] | None = None
        self.again: list[StreamMessage] | None = None  # nacked, to redeliver now
        for message in messages:
            message._settler = self

    def settled(self, message: StreamMessage, delay: float) -> Awaitable[None] | None:
        settlement = message._settlement
        if settlement is Settlement.ACK:
            loop = self.loop
            if loop.eager_acks:
                return loop.settle((message,), ())  # at-most-once: before the handler
            if loop.settle_each and self.results is None:
                return loop.settle((message,), ())  # no result of the delivery to wait for
            if self.acked is None:
                self.acked = [message]
            else:
                self.acked.append(message)
        elif settlement is Settlement.REJECT:
            if self.loop.settle_each and self.results is None:
                return self.loop.settle((), (message,))
            if self.rejected is None:
                self.rejected = [message]
            else:
                self.rejected.append(message)
        elif delay > 0:
            self.loop.redeliver_later(message, delay)
        elif self.again is None:
            self.again = [message]
        else:
            self.again.append(message)
        return None

    def keep_result(self, owner: object, item: Any) -> bool:
        if owner is not self.owner:
            return False
        if self.results is None:
            self.results = [item]
        else:
            self.results.append(item)
        return True

    async def finish(self) -> None:
        results, acked, rejected, again = self.results, self.acked, self.rejected, self.again
        # Taken out of the job: a message points to its job, and no cycle must keep them.
        self.results = self.acked = self.rejected = self.again = None
        loop = self.loop
        if results:
            try:
                await loop.broker.transport.publish_many(results)
            except Exception as exc:
                loop.log.warning(
                    "subscriber %s: %d result(s) not published (%s); the %d message(s) they "
                    "answer are handled again in %.0fs",
                    loop.name,
                    len(results),
                    exc,
                    len(acked or ()),
                    RESULTS_RETRY_DELAY,
                )
                for message in acked or ():
                    loop.redeliver_later(message, RESULTS_RETRY_DELAY)
                acked = None
        if acked or rejected:
            await loop.settle(acked or (), rejected or ())
        if again:
            await loop.redeliver(again)


class ConsumeLoop:
    """Fetches for one :class:`~fastapi_stream.core.subscriber.Subscriber` and runs what
    it fetched through the subscriber's pipeline."""

    def __init__(
        self, subscriber: Subscriber, broker: StreamBroker, *, eager_acks: bool = False
    ) -> None:
        self.subscriber = subscriber
        self.broker = broker
        #: Send acks at once instead of with the delivery's other settlements (ACK_FIRST).
        self.eager_acks = eager_acks
        #: Settle each message of an inline delivery as it finishes (``Subscription.
        #: settle_each``) while none of the delivery's results waits to be published.
        self.settle_each = False
        self.name = subscriber.name
        self.log = broker.logger
        self.subscription: Subscription | None = None
        self.batch = subscriber.batch
        self.limit = subscriber.prefetch
        self.reconnect = Reconnecting(
            f"consuming {subscriber.channel} for {self.name}", broker.reconnect, self.log
        )
        self.stopping = False
        self._fetching = False  # waiting for the broker: the one place stop may cancel
        self._task: asyncio.Task[None] | None = None
        self._slots = (
            asyncio.Semaphore(subscriber.max_workers)
            if subscriber.max_workers > 1 and not self.batch
            else None
        )
        #: How a delivery handled inline runs: one batch-handler call, or message by message.
        self._run_delivery = subscriber.process_batch if self.batch else self._process_all
        self._active: set[asyncio.Future[Any]] = set()
        # Messages nacked with a delay: (due, order, message), handed back when due.
        self._later: list[tuple[float, int, StreamMessage]] = []
        self._order = itertools.count()
        self._retrier: asyncio.Task[None] | None = None
        # Settlements the broker did not take, sent again at _settle_at.
        self._unsent: list[tuple[list[StreamMessage], list[StreamMessage]]] = []
        self._settle_at: float | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._wake_retrier = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, subscription: Subscription) -> None:
        """Consume from ``subscription``, in a task of its own (and one for delayed
        redeliveries, and one for keepalives where the subscription wants them)."""
        self.subscription = subscription
        self.settle_each = subscription.settle_each
        self._task = asyncio.create_task(self._run(), name=f"consume {self.name}")
        self._retrier = asyncio.create_task(self._redeliver_when_due())
        if subscription.keepalive_interval is not None:
            self._keepalive = asyncio.create_task(
                self._keep_alive(subscription, subscription.keepalive_interval)
            )

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let the handlers finish for up to ``timeout`` seconds, cancel the
        rest (their messages stay unsettled), then close the subscription."""
        self.stopping = True
        subscription = self.subscription
        assert subscription is not None
        if self._task is not None and self._fetching:
            self._task.cancel()
        running = [*([self._task] if self._task is not None else []), *self._active]
        if running:
            _, pending = await asyncio.wait(running, timeout=timeout)
            if pending:
                self.log.warning(
                    "subscriber %s: %d handler(s) still running after the %.1fs graceful "
                    "timeout were cancelled; their messages stay unacknowledged",
                    self.name,
                    len(pending),
                    timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        helpers = [task for task in (self._retrier, self._keepalive) if task is not None]
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        # What is still unsettled (cancelled, not reached, nacked for later) goes back.
        await subscription.close()

    # -- fetching ----------------------------------------------------------------------

    async def _run(self) -> None:
        subscription = self.subscription
        assert subscription is not None
        while not self.stopping:
            self._fetching = True
            try:
                async with asyncio.timeout(FETCH_TIMEOUT):
                    messages = await subscription.fetch(self.limit)
            except asyncio.CancelledError:
                if self.stopping:
                    return
                raise
            except Exception as exc:
                try:
                    await self.reconnect.failed(exc)
                except asyncio.CancelledError:
                    if self.stopping:
                        return
                    raise
                continue
            finally:
                self._fetching = False
            if self.reconnect.failing:
                self.reconnect.succeeded()
                self._wake_retrier.set()  # redeliveries that failed meanwhile: now
            if messages and not self.stopping:
                await self.handle(messages)

    # -- handling ----------------------------------------------------------------------

    async def deliver(self, messages: Sequence[StreamMessage]) -> None:
        """Handle ``messages`` now: the entry point of a broker inside the process that
        delivers as it publishes (the test broker's inline engine). Errors reach the
        caller when the broker raises them."""
        if self._slots is None:
            await self._inline(messages, self._run_delivery, self.broker.raise_errors)
        else:
            await self.handle(messages, raise_errors=self.broker.raise_errors)

    async def handle(
        self, messages: Sequence[StreamMessage], *, raise_errors: bool = False
    ) -> None:
        """Run ``messages`` through the subscriber: as one batch, one after the other, or
        each in a worker when the subscriber has ``max_workers`` > 1."""
        if self._slots is None:
            await self._inline(messages, self._run_delivery, raise_errors)
        else:
            for message in messages:
                await self._slots.acquire()
                if self.stopping:
                    self._slots.release()
                    return
                self._spawn(self._work(message))

    async def _process_all(self, messages: Sequence[StreamMessage]) -> None:
        process = self.subscriber.process
        ordered = self.subscription is not None and self.subscription.ordered
        for index, message in enumerate(messages):
            if self.stopping:
                return  # not reached: unsettled, so the broker delivers it again
            await process(message)
            if ordered and message._settlement is Settlement.NACK:
                for later in messages[index + 1 :]:
                    await later.nack()  # back unhandled, behind the nacked one: in order
                return

    async def _inline(
        self,
        messages: Sequence[StreamMessage],
        run: Callable[[Sequence[StreamMessage]], Awaitable[None]],
        raise_errors: bool,
    ) -> None:
        task = asyncio.current_task()
        if task is self._task:  # the fetch loop itself: stop waits for it anyway
            await self._job(messages, run, raise_errors)
            return
        assert task is not None
        active = self._active  # a publisher's task (inline engine): stop waits for it too
        active.add(task)
        try:
            await self._job(messages, run, raise_errors)
        finally:
            active.discard(task)

    async def _work(self, message: StreamMessage) -> None:
        assert self._slots is not None
        try:
            await self._job((message,), self._process_all, False)
        finally:
            self._slots.release()

    async def _job(
        self,
        messages: Sequence[StreamMessage],
        run: Callable[[Sequence[StreamMessage]], Awaitable[None]],
        raise_errors: bool,
    ) -> None:
        job = _Job(self, messages)
        error: Exception | None = None
        try:
            await run(messages)
        except Exception as exc:
            if raise_errors:
                error = exc
            else:
                self.log.exception("subscriber %s: handling a delivery failed", self.name)
        await job.finish()
        for message in messages:
            message._settler = None  # a message a test mock keeps must not keep its job
        if error is not None:
            raise error

    def _spawn(self, work: Awaitable[None]) -> None:
        worker = asyncio.ensure_future(work)
        self._active.add(worker)
        worker.add_done_callback(self._active.discard)

    # -- settling ----------------------------------------------------------------------

    async def settle(
        self, acked: Sequence[StreamMessage], rejected: Sequence[StreamMessage]
    ) -> None:
        if not (acked or rejected):
            return
        assert self.subscription is not None
        try:
            await self.subscription.settle(acked, rejected)
        except Exception as exc:
            # Kept and sent again once the broker answers: left alone, a live consumer's
            # unsettled messages would wait for it forever (a Redis list's processing
            # list, a stream's pending entries). If it stops first, close() hands them
            # back and they are delivered again: at-least-once either way.
            self.log.warning(
                "subscriber %s: %d settlement(s) not sent yet (%s: %s)",
                self.name,
                len(acked) + len(rejected),
                type(exc).__name__,
                exc,
            )
            self._unsent.append((list(acked), list(rejected)))
            self._settle_at = time.monotonic() + self.broker.reconnect.cap
            self._wake_retrier.set()

    async def redeliver(self, messages: Sequence[StreamMessage]) -> None:
        """Hand ``messages`` back now; if the broker cannot take them, keep them and try
        again once it answers."""
        assert self.subscription is not None
        try:
            await self.subscription.redeliver(messages)
        except Exception as exc:
            self.log.warning(
                "subscriber %s: %d message(s) not handed back for redelivery yet (%s: %s)",
                self.name,
                len(messages),
                type(exc).__name__,
                exc,
            )
            for message in messages:
                self.redeliver_later(message, self.broker.reconnect.cap)

    def redeliver_later(self, message: StreamMessage, delay: float) -> None:
        due = time.monotonic() + delay
        first = not self._later or due < self._later[0][0]
        heapq.heappush(self._later, (due, next(self._order), message))
        if first:
            self._wake_retrier.set()

    async def _redeliver_when_due(self) -> None:
        """Hand back nacked messages when their delay is over, and send again the
        settlements the broker did not take."""
        later = self._later
        while True:
            self._wake_retrier.clear()
            times = [t for t in (later[0][0] if later else None, self._settle_at) if t]
            wait = min(times) - time.monotonic() if times else None
            if wait is None or wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake_retrier.wait()
                except TimeoutError:
                    pass
            now = time.monotonic()
            if self._settle_at is not None and self._settle_at <= now:
                unsent, self._unsent, self._settle_at = self._unsent, [], None
                for acked, rejected in unsent:
                    await self.settle(acked, rejected)
            due: list[StreamMessage] = []
            while later and later[0][0] <= now:
                due.append(heapq.heappop(later)[2])
            if due:
                await self.redeliver(due)

    async def _keep_alive(self, subscription: Subscription, interval: float) -> None:
        attempts = Reconnecting(f"keepalive of {self.name}", self.broker.reconnect, self.log)
        while True:
            await asyncio.sleep(interval)
            try:
                await subscription.keepalive()
            except Exception as exc:
                await attempts.failed(exc)
            else:
                attempts.succeeded()
