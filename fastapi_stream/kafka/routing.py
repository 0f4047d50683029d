"""Which topics a Kafka subscriber reads, from its options: its topics, or a pattern
matched against whole topic names; and the same rules for the test broker."""

from __future__ import annotations

import re

from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.transport import Routing, SubscriptionSpec

__all__ = ["KafkaRouting", "subscription_pattern", "subscription_topics"]


def full_match(pattern: str) -> re.Pattern[str]:
    """A user's topic regex, matched against whole topic names (as Kafka does)."""
    return re.compile(f"(?:{pattern})\\Z")


def subscription_pattern(spec: SubscriptionSpec) -> re.Pattern[str] | None:
    pattern = spec.options.get("pattern")
    return full_match(pattern) if pattern else spec.channel.regex


def subscription_topics(spec: SubscriptionSpec) -> list[str]:
    return list(dict.fromkeys([spec.channel.template, *spec.options.get("topics", ())]))


class KafkaRouting(Routing):
    """Kafka's rules for the test broker: a subscriber gets its topics (several, or those
    matching a ``pattern``), and subscribers of one ``group_id`` on the same topics
    compete for their messages."""

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        if spec.group is None:
            return None
        pattern = subscription_pattern(spec)
        what = pattern.pattern if pattern else ",".join(sorted(subscription_topics(spec)))
        return f"{what}#{spec.group}"

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        pattern = subscription_pattern(spec)
        if pattern is not None:
            return pattern.match(message.channel) is not None
        return message.channel in subscription_topics(spec)
