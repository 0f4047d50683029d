"""RabbitMQ's routing rules, for the test broker to route exactly like the real one.

A message published to exchange ``E`` with routing key ``k`` reaches a subscription when
``E`` is its queue's exchange, or an exchange bound upstream of it, and every binding on
the way matches ``k`` by its exchange's type. RabbitMQ's default exchange (``""``) reaches
the queue named ``k``, whatever else the queue is bound to.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.transport import Routing, SubscriptionSpec
from fastapi_stream.rabbit.options import (
    Binding,
    ExchangeType,
    RabbitExchange,
    as_exchange,
    binding_for,
)

__all__ = ["RabbitRouting", "binding_matches", "topic_matches"]


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _words_match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _words_match(rest, words[1:])


def binding_matches(
    kind: ExchangeType,
    binding_key: str,
    bind_arguments: Mapping[str, Any] | None,
    routing_key: str,
    headers: Mapping[str, str],
) -> bool:
    """Whether a binding of an exchange of type ``kind`` passes a message on."""
    if kind is ExchangeType.FANOUT:
        return True
    if kind is ExchangeType.TOPIC:
        return topic_matches(binding_key, routing_key)
    if kind is ExchangeType.HEADERS:
        arguments = dict(bind_arguments or {})
        match_any = str(arguments.pop("x-match", "all")).startswith("any")
        wanted = [(k, v) for k, v in arguments.items() if not k.startswith("x-")]
        hits = (headers.get(k) == v for k, v in wanted)
        return any(hits) if match_any else all(hits)
    return binding_key == routing_key


def _reaches(exchange: RabbitExchange, target: str, routing_key: str, headers: Any) -> bool:
    """Whether a message published to exchange ``target`` arrives at ``exchange``."""
    if exchange.name == target:
        return True
    upstream = exchange.bind_to
    if upstream is None:
        return False
    return _reaches(upstream, target, routing_key, headers) and binding_matches(
        upstream.type, exchange.routing_key, exchange.bind_arguments, routing_key, headers
    )


class RabbitRouting(Routing):
    """Queues as groups (consumers of one queue compete), exchanges and bindings as
    RabbitMQ applies them. A plain exchange name routes as a direct exchange here: give
    a :class:`RabbitExchange` with its type where that matters."""

    def __init__(
        self,
        exchange: RabbitExchange | None = None,
        queue_arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.exchange = exchange
        self.queue_arguments = queue_arguments
        # Specs hold a dict, so they are not hashable: cache by identity.
        self._bindings: dict[int, tuple[SubscriptionSpec, Binding]] = {}

    def binding(self, spec: SubscriptionSpec) -> Binding:
        cached = self._bindings.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        binding = binding_for(spec, self.exchange, self.queue_arguments)
        self._bindings[id(spec)] = (spec, binding)
        return binding

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        # A server-named queue ("") is private to its subscriber.
        return self.binding(spec).queue.name or None

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        binding = self.binding(spec)
        target = as_exchange(message.options.get("exchange", self.exchange))
        routing_key = message.channel
        if target is None:
            return binding.queue.name == routing_key
        exchange = binding.exchange
        return (
            exchange is not None
            and _reaches(exchange, target.name, routing_key, message.headers)
            and binding_matches(
                exchange.type,
                binding.routing_key,
                binding.bind_arguments,
                routing_key,
                message.headers,
            )
        )
