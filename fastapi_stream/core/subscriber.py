"""Subscribers: one handler consuming one channel, and everything around the handler call.

For each delivered message a subscriber runs the middlewares, validates and calls the
handler through its :class:`~fastapi_stream.core.handler.CallPlan`, publishes the result
to the stacked publishers and to ``reply_to``, and settles the message per its ack policy:

* success: ack;
* a body or header that does not fit the handler: reject at once (one log line naming the
  invalid fields, never the payload) and dead-letter where configured;
* a handler error: nack with backoff while the retry budget lasts, then reject or
  dead-letter;
* cancelled (shutdown deadline): not settled at all, so the broker delivers it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import params

from fastapi_stream.core import codec, results
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.consume import ConsumeLoop
from fastapi_stream.core.endpoint import Endpoint
from fastapi_stream.core.errors import ConfigurationError, PayloadError
from fastapi_stream.core.handler import CallContext, CallPlan
from fastapi_stream.core.message import OutgoingMessage, StreamMessage
from fastapi_stream.core.middleware import ConsumeNext, Middleware, chain_consume
from fastapi_stream.core.policy import AckPolicy, Retry
from fastapi_stream.core.publisher import Response
from fastapi_stream.core.transport import SubscriptionSpec
from fastapi_stream.observability.logging import enter_message, leave_message

if TYPE_CHECKING:
    from fastapi_stream.core.broker import StreamBroker

__all__ = ["Subscriber"]

#: How many message ids a subscriber remembers to count deliveries on brokers that don't.
_ATTEMPT_MEMORY = 10_000
#: Longest exception text copied into a dead letter's headers.
_REASON_LIMIT = 500


class Subscriber:
    """Consumes ``channel`` (optionally within a consumer ``group``) into ``endpoint``."""

    def __init__(
        self,
        channel: str,
        endpoint: Endpoint[..., Any],
        *,
        group: str | None = None,
        ack_policy: AckPolicy | None = None,
        retry: Retry | None = None,
        dead_letter: str | None = None,
        max_workers: int = 1,
        prefetch: int | None = None,
        max_body_bytes: int | None = None,
        batch: bool = False,
        dependencies: Sequence[params.Depends] = (),
        middlewares: Sequence[Middleware] = (),
        decoder: codec.Decoder | None = None,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        options: dict[str, Any] | None = None,
    ) -> None:
        if not channel or not isinstance(channel, str):
            raise ConfigurationError(
                f"a subscriber needs a channel name (str), not {type(channel).__name__} {channel!r}"
            )
        if max_workers < 1:
            raise ConfigurationError(f"subscriber {channel!r}: max_workers must be >= 1")
        self.channel = ChannelPattern.parse(channel)
        self.endpoint = endpoint
        #: The handler's qualified name, for logs, metrics and health output.
        self.name: str = getattr(endpoint.func, "__qualname__", repr(endpoint.func))
        self.group = group
        self.ack_policy = ack_policy
        self.retry = retry
        self.dead_letter = dead_letter
        self.max_workers = max_workers
        #: Larger bodies are rejected before decoding (``None``: the broker's limit).
        self.max_body_bytes = max_body_bytes
        self.batch = batch
        self.prefetch = prefetch if prefetch is not None else max(100, max_workers)
        self.middlewares = list(middlewares)
        self.decoder = decoder
        self.title = title
        self.description = description or (endpoint.__doc__ or "").strip() or None
        self.include_in_schema = include_in_schema
        self.options = options or {}
        self.dependencies = list(dependencies)
        self.plan = self._plan()
        self.broker: StreamBroker | None = None
        self._loop: ConsumeLoop | None = None
        self._consume: ConsumeNext = self._call_handler
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self._stop_task: asyncio.Future[None] | None = None
        self._observers: list[Middleware] = []
        self._log_level: int | None = None

    def __repr__(self) -> str:
        return f"Subscriber({self.channel.template!r}, group={self.group!r})"

    def _plan(self) -> CallPlan:
        return CallPlan(
            self.endpoint.func,
            path_params=self.channel.params,
            dependencies=self.dependencies,
            decoder=self.decoder,
            batch=self.batch,
        )

    def add_dependencies(self, dependencies: Sequence[params.Depends]) -> None:
        """Run ``dependencies`` before the handler's own (a including router's)."""
        if dependencies:
            self.dependencies[:0] = dependencies
            self.plan = self._plan()

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.stopping

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, broker: StreamBroker) -> None:
        """Begin consuming through ``broker``'s transport."""
        if self._loop is not None:
            return
        self.broker = broker
        self._policy = self.ack_policy or broker.ack_policy
        self._retry = self.retry or broker.retry
        self._dead_letter = self._dead_letter_channel(broker.dead_letter)
        middlewares = [*broker.middlewares, *self.middlewares]
        self._consume = chain_consume(middlewares, self._call_handler)
        self._observers = [m for m in middlewares if type(m).settled is not Middleware.settled]
        self._log_level = broker.message_log_level
        self._max_body = self.max_body_bytes or broker.max_body_bytes
        spec = SubscriptionSpec(
            channel=self.channel,
            group=self.group,
            prefetch=self.prefetch,
            max_workers=self.max_workers,
            batch=self.batch,
            max_attempts=self._retry.max_attempts,
            options=self.options,
        )
        loop = ConsumeLoop(self, broker, eager_acks=self._policy is AckPolicy.ACK_FIRST)
        subscription = await broker.transport.subscribe(spec, loop.deliver)
        loop.start(subscription)
        self._loop = loop

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let in-flight handlers finish for up to ``timeout`` seconds, then
        cancel the rest (their messages stay unsettled, to be delivered again).

        A second call while the first drains waits for the same drain."""
        if self._stop_task is None:
            if self._loop is None:
                return
            self._stop_task = asyncio.ensure_future(self._stop(timeout))
        task = self._stop_task
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._stop_task is task:
                self._stop_task = None

    async def _stop(self, timeout: float) -> None:
        loop, self._loop = self._loop, None
        assert loop is not None
        await loop.stop(timeout)

    async def process(self, message: StreamMessage) -> None:
        """Run one message through the pipeline and settle it."""
        token = enter_message(self.name, message)
        try:
            if self._log_level is None:
                await self._process(message)
                return
            started = time.perf_counter()
            self._log().log(self._log_level, "received message %s", message.message_id)
            await self._process(message)
            self._log().log(
                self._log_level,
                "message %s %s in %.1f ms",
                message.message_id,
                message.settlement.value if message.settlement else "left unsettled",
                (time.perf_counter() - started) * 1000,
            )
        finally:
            leave_message(token)

    async def _process(self, message: StreamMessage) -> None:
        broker = self.broker
        assert broker is not None
        if self._policy is AckPolicy.ACK_FIRST:
            await message.ack()
        if self.channel.regex is not None:
            message.path = self.channel.match(message.channel) or {}
        error: Exception | None = None
        try:
            if self._max_body is not None and len(message.body) > self._max_body:
                raise self._too_large(message)
            await self._consume(message)
        except PayloadError as exc:
            error = exc
            await self._reject_invalid(message, exc)
        except Exception as exc:
            error = exc
            await self._handle_failure(message, exc)
        else:
            if message._settlement is None and self._policy is AckPolicy.ACK:
                await message.ack()
        # Cancellation (the shutdown deadline) skips all of this: no settlement, no record.
        for middleware in self._observers:
            await middleware.settled(message, error)
        self._record(message, broker.testing)
        if error is not None and broker.raise_errors:
            raise error

    async def process_batch(self, messages: Sequence[StreamMessage]) -> None:
        """Run a batch handler on ``messages`` and settle each of them.

        Messages whose body does not validate are rejected one by one and left out of the
        batch; if the handler fails, each message goes through the retry policy.
        Consume middlewares wrap single messages only, so they are not run for batches.
        """
        if not messages:
            return
        first = messages[0]
        token = enter_message(self.name, first)
        try:
            await self._process_batch(messages)
        finally:
            leave_message(token)

    async def _process_batch(self, messages: Sequence[StreamMessage]) -> None:
        broker = self.broker
        assert broker is not None
        if self._policy is AckPolicy.ACK_FIRST:
            for message in messages:
                await message.ack()
        valid: list[StreamMessage] = []
        items: list[Any] = []
        invalid: PayloadError | None = None
        for message in messages:
            try:
                if self._max_body is not None and len(message.body) > self._max_body:
                    raise self._too_large(message)
                items.append(self.plan.validate_item(message))
            except PayloadError as exc:
                await self._reject_invalid(message, exc)
                invalid = invalid or exc
                continue
            valid.append(message)
        if valid:
            await self._run_batch(valid, items)
        if invalid is not None and broker.raise_errors:
            raise invalid

    async def _run_batch(self, valid: list[StreamMessage], items: list[Any]) -> None:
        broker = self.broker
        assert broker is not None
        error: Exception | None = None
        try:
            ctx = self._context(valid[0]) if self.plan.needs_context else None
            result = await self.plan.run_batch(items, ctx)
            await self._publish_result(valid[0], result, reply=False)
            if ctx is not None and ctx.background is not None:
                await ctx.run_background()
        except Exception as exc:
            error = exc
            # In order: the core hands the nacks to the transport together, in this order.
            for message in valid:
                await self._handle_failure(message, exc)
        else:
            if self._policy is AckPolicy.ACK:
                for message in valid:
                    if message._settlement is None:
                        await message.ack()
        self._record_batch(valid, broker.testing)
        if error is not None and broker.raise_errors:
            raise error

    def _record_batch(self, messages: Sequence[StreamMessage], testing: bool) -> None:
        if testing:
            self.endpoint.record_call([(m.body, m.content_type) for m in messages])
        else:
            self.endpoint.record_call()

    def _record(self, message: StreamMessage, testing: bool) -> None:
        if testing:
            self.endpoint.record_call((message.body, message.content_type))
        else:
            self.endpoint.record_call()

    async def _call_handler(self, message: StreamMessage) -> Any:
        """The end of the consume chain: the handler, then publishing what it returned
        (inside the middlewares, so a trace or a timing covers both)."""
        ctx = self._context(message) if self.plan.needs_context else None
        result = await self.plan.run(message, ctx)
        await self._publish_result(message, result)
        if ctx is not None and ctx.background is not None:
            await ctx.run_background()
        return result

    def _context(self, message: StreamMessage) -> CallContext:
        broker = self.broker
        assert broker is not None
        return CallContext(
            message=message,
            broker=broker,
            logger=broker.logger,
            state=broker.state,
            overrides=broker.dependency_overrides,
        )

    async def _publish_result(
        self, message: StreamMessage, result: Any, *, reply: bool = True
    ) -> None:
        publishers = self.endpoint.publishers
        reply_to = message.reply_to if reply else None
        if not publishers and not reply_to:
            return
        headers: dict[str, str] | None = None
        options: dict[str, Any] = {}
        correlation_id = message.correlation_id or message.message_id
        if isinstance(result, Response):
            headers, options = result.headers, result.options
            correlation_id = result.correlation_id or correlation_id
            result = result.body
        # Sent together with the delivery's other results, before its acks (core/results.py).
        token = results.begin(message._settler)
        try:
            for publisher in publishers:
                await publisher.publish(
                    result, headers=headers, correlation_id=correlation_id, **options
                )
            if reply_to:
                broker = self.broker
                assert broker is not None
                await broker.publish(
                    result,
                    reply_to,
                    headers=headers,
                    correlation_id=correlation_id,
                    **options,
                )
        finally:
            results.end(token)

    # -- failures ----------------------------------------------------------------------

    def _log(self) -> logging.Logger:
        return self.broker.logger if self.broker is not None else logging.getLogger(__name__)

    def _too_large(self, message: StreamMessage) -> PayloadError:
        return PayloadError(
            f"body of {len(message.body)} bytes is over the limit of {self._max_body} "
            "(max_body_bytes)"
        )

    async def _reject_invalid(self, message: StreamMessage, exc: PayloadError) -> None:
        self._log().error(
            "rejected message %s on %s (subscriber %s): %s",
            message.message_id,
            message.channel,
            self.name,
            exc,
        )
        if message.settlement is None:
            await self._give_up(message, str(exc), attempts=1)

    async def _handle_failure(self, message: StreamMessage, exc: Exception) -> None:
        if message.settlement is not None:
            self._log().error(
                "handler %s failed on message %s from %s after settling it (%s)",
                self.name,
                message.message_id,
                message.channel,
                message.settlement.value,
                exc_info=exc,
            )
            return
        attempt = self._attempt(message)
        retry = self._retry
        if attempt < retry.max_attempts:
            delay = retry.delay(attempt)
            self._log().warning(
                "handler %s failed on message %s from %s (attempt %d of %d), retrying in "
                "%.2fs: %s: %s",
                self.name,
                message.message_id,
                message.channel,
                attempt,
                retry.max_attempts,
                delay,
                type(exc).__name__,
                exc,
            )
            await message.nack(delay)
            return
        self._log().error(
            "handler %s failed on message %s from %s after %d attempt(s), giving up",
            self.name,
            message.message_id,
            message.channel,
            attempt,
            exc_info=exc,
        )
        self._forget(message)
        await self._give_up(message, f"{type(exc).__name__}: {exc}"[:_REASON_LIMIT], attempt)

    def _attempt(self, message: StreamMessage) -> int:
        """Which delivery of ``message`` this is; from the broker where it counts."""
        if message.delivery_attempt is not None:
            return message.delivery_attempt
        if message.message_id is None:
            # Nothing to count with: retrying could loop forever, so this is the last try.
            return self._retry.max_attempts
        attempts = self._attempts.get(message.message_id, 0) + 1
        self._attempts[message.message_id] = attempts
        self._attempts.move_to_end(message.message_id)
        if len(self._attempts) > _ATTEMPT_MEMORY:
            self._attempts.popitem(last=False)
        return attempts

    def _dead_letter_channel(self, inherited: str | None) -> str | None:
        """Where this subscriber's rejects go. Never the channel it consumes itself: a
        subscriber of the dead letters would get its own rejects back, forever."""
        own = self.dead_letter is not None
        channel = self.dead_letter or inherited
        if channel is None or self.channel.match(channel) is None:
            return channel
        if own:
            raise ConfigurationError(
                f"subscriber {self.name}: dead_letter={channel!r} is the channel it consumes, "
                "so its rejects would come back to it forever; name another channel"
            )
        self._log().info(
            "subscriber %s consumes the dead letters (%s): its own rejects are dropped, "
            "not dead-lettered again",
            self.name,
            channel,
        )
        return None

    def _forget(self, message: StreamMessage) -> None:
        if message.message_id is not None:
            self._attempts.pop(message.message_id, None)

    async def _give_up(self, message: StreamMessage, reason: str, attempts: int) -> None:
        """Dead-letter the message where configured, else reject it."""
        broker = self.broker
        assert broker is not None
        if not self._dead_letter:
            await message.reject()
            return
        dead = OutgoingMessage(
            channel=self._dead_letter,
            body=message.body,
            headers={
                **message.headers,
                "x-dead-letter-reason": reason.replace("\r", " ").replace("\n", " "),
                "x-original-channel": message.channel,
                "x-delivery-attempts": str(attempts),
            },
            content_type=message.content_type,
            correlation_id=message.correlation_id,
        )
        if message.message_id:
            dead.message_id = message.message_id
        try:
            await broker.send(dead)
        except Exception:
            self._log().exception(
                "could not dead-letter message %s to %s; it will be delivered again",
                message.message_id,
                self._dead_letter,
            )
            await message.nack(self._retry.delay(attempts))
            return
        await message.ack()
