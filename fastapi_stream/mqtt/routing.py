"""MQTT's topic rules, shared by the transport and the test broker.

* Levels are separated by ``/``. A ``{param}`` of a channel fills one whole level and is
  subscribed as ``+`` (``"sensors/{room}/temp"`` is ``sensors/+/temp``); a ``.`` is an
  ordinary character of a level, so ``"sensors.{room}"`` is refused with the fix.
* ``+`` matches exactly one level (an empty one too), a final ``#`` any number of levels,
  the parent level included (``sensors/#`` matches ``sensors``). Topics starting with
  ``$`` (``$SYS/...``) are not matched by a filter starting with a wildcard.
* A ``group`` is a shared subscription, ``$share/{group}/{filter}``: its subscribers
  compete for the messages; each group, and each subscriber without one, gets every
  message.
"""

from __future__ import annotations

import re
from functools import lru_cache

from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.transport import Routing, SubscriptionSpec

__all__ = ["MqttRouting", "shared_filter", "topic_filter", "topic_matches"]

_PARAM = re.compile(r"{[A-Za-z_][A-Za-z0-9_]*}")


@lru_cache(maxsize=1024)
def _filter_of(template: str) -> str:
    levels = template.split("/")
    for i, level in enumerate(levels):
        if _PARAM.search(level):
            if not _PARAM.fullmatch(level):
                raise ConfigurationError(
                    f"MQTT channel {template!r}: a parameter must fill a whole topic level, "
                    f"and MQTT separates levels with '/' (write {template.replace('.', '/')!r})"
                )
            levels[i] = "+"
        elif ("#" in level and (level != "#" or i != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            raise ConfigurationError(
                f"MQTT channel {template!r}: '+' must fill a level and '#' must be the last one"
            )
    return "/".join(levels)


def topic_filter(spec: SubscriptionSpec) -> str:
    """The MQTT topic filter of a subscription, without its shared-subscription prefix."""
    return _filter_of(spec.channel.template)


def shared_filter(spec: SubscriptionSpec) -> str:
    """What to SUBSCRIBE to: ``$share/{group}/{filter}`` for a group, else the filter."""
    found = topic_filter(spec)
    return found if spec.group is None else f"$share/{spec.group}/{found}"


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, topic: str) -> bool:
    """Whether MQTT topic filter ``pattern`` matches ``topic``."""
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True  # the parent level too: len(levels) may be i
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


class MqttRouting(Routing):
    """Routes like an MQTT broker: wildcards, ``$`` topics, shared subscriptions."""

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        return None if spec.group is None else shared_filter(spec)

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        return topic_matches(topic_filter(spec), message.channel)
