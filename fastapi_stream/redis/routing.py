"""Redis's routing rules, shared by the transport and the test broker.

* A publish reaches subscriptions of the same kind (pub/sub channel, list or stream) and
  name; pub/sub also reaches pattern subscriptions. ``{param}`` patterns match one
  segment (no ``.`` or ``/``), as everywhere in fastapi_stream; ``PubSub(pattern=True)``
  takes a raw Redis glob (``*``, ``?``, ``[a-z]``, ``[^x]``, ``\\`` escapes), matched by
  the same rules as Redis's PSUBSCRIBE.
* Pub/sub has no consumer groups: every subscriber gets every message. All subscribers
  of a list compete for its items, whatever their group. Stream subscribers sharing a
  group compete; each group gets every entry.
"""

from __future__ import annotations

import re
from functools import lru_cache

from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import OutgoingMessage
from fastapi_stream.core.transport import Routing, SubscriptionSpec
from fastapi_stream.redis.options import KINDS, Kind, PubSub, StreamSub, kind_of

__all__ = ["RedisRouting", "glob_to_regex", "redis_glob", "stream_group"]


@lru_cache(maxsize=1024)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching exactly what Redis's glob ``pattern`` matches."""
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < size:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            i, cls = _char_class(pattern, i + 1)
            out.append(cls)
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """Translate ``[...]`` starting after its ``[``; returns the index of its ``]``."""
    size = len(pattern)
    negate = i < size and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    while i < size and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < size:
            i += 1
            items.append(re.escape(pattern[i]))
        elif i + 2 < size and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = sorted((pattern[i], pattern[i + 2]))  # Redis accepts [z-a] too
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            items.append(re.escape(pattern[i]))
        i += 1
    if not items:
        return i, "." if negate else "(?!)"
    return i, f"[{'^' if negate else ''}{''.join(items)}]"


def redis_glob(spec: SubscriptionSpec) -> str | None:
    """The PSUBSCRIBE pattern of a pub/sub subscription, ``None`` for a plain channel."""
    settings = spec.options.get("pubsub")
    if isinstance(settings, PubSub) and settings.pattern:
        if spec.channel.is_pattern:
            raise ConfigurationError(
                f"channel {spec.channel}: use either {{param}} placeholders or pattern=True"
            )
        return spec.channel.template
    if not spec.channel.is_pattern:
        return None
    literal = re.sub(r"([\\*?\[\]])", r"\\\1", spec.channel.template)
    return re.sub(r"{[A-Za-z_][A-Za-z0-9_]*}", "*", literal)


def stream_group(spec: SubscriptionSpec) -> str | None:
    settings = spec.options.get("stream")
    if spec.group is not None:
        return spec.group
    return settings.group if isinstance(settings, StreamSub) else None


class RedisRouting(Routing):
    """Routes like Redis for subscriptions and publishes of the three kinds; a bare name
    takes ``default_kind``."""

    def __init__(self, default_kind: Kind = "pubsub") -> None:
        self.default_kind = default_kind
        #: The kind of every list and stream subscribed to, for their dead letters.
        self._sources: dict[str, Kind] = {}

    def kind(self, spec: SubscriptionSpec) -> Kind:
        """The kind of a subscription (its options, else the default)."""
        kind = kind_of(spec.options, self.default_kind)
        if kind != "pubsub":
            if spec.channel.is_pattern:
                raise ConfigurationError(
                    f"{kind} {spec.channel}: only pub/sub channels take patterns; a {kind} "
                    "subscription names one key"
                )
            self._sources[spec.channel.template] = kind
        return kind

    def publish_kind(self, message: OutgoingMessage) -> Kind:
        """The kind of a publish (its options, else the default). A dead letter keeps
        the kind of the list or stream it comes from."""
        if not any(message.options.get(kind) for kind in KINDS):
            headers = message.headers
            if "x-dead-letter-reason" in headers:
                source = self._sources.get(headers.get("x-original-channel", ""))
                if source is not None:
                    return source
        return kind_of(message.options, self.default_kind)

    def group_key(self, spec: SubscriptionSpec) -> str | None:
        kind = self.kind(spec)
        if kind == "list":
            return f"list:{spec.channel.template}"
        group = stream_group(spec) if kind == "stream" else None
        return None if group is None else f"stream:{spec.channel.template}#{group}"

    def matches(self, spec: SubscriptionSpec, message: OutgoingMessage) -> bool:
        kind = self.kind(spec)
        if kind != self.publish_kind(message):
            return False
        glob = redis_glob(spec) if kind == "pubsub" else None
        if glob is not None and not spec.channel.is_pattern:
            return glob_to_regex(glob).match(message.channel) is not None
        return spec.channel.match(message.channel) is not None
