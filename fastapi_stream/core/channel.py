"""Channel names with parameters: ``"orders.{region}"`` matches ``"orders.eu"`` and
gives the handler ``region="eu"``, like a path parameter of an HTTP route."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ChannelPattern"]

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


def _segment(literal: str) -> str:
    """What one parameter matches: one segment, i.e. anything but the separator the
    template itself uses (``.`` in ``"orders.{region}"``, ``/`` in MQTT's
    ``"sensors/{room}"``); both when the template shows neither."""
    separators = [sep for sep in "./" if sep in literal] or [".", "/"]
    return f"[^{re.escape(''.join(separators))}]+"


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A parsed channel name; ``params`` is empty for a plain name."""

    template: str
    params: tuple[str, ...]
    regex: re.Pattern[str] | None

    @classmethod
    def parse(cls, template: str) -> ChannelPattern:
        if not template:
            raise ValueError("a channel name must not be empty")
        params = tuple(_PARAM.findall(template))
        if len(set(params)) != len(params):
            raise ValueError(f"channel {template!r} names a parameter twice")
        if not params:
            return cls(template, (), None)
        parts = _PARAM.split(template)
        # split() alternates literal text and parameter names.
        segment = _segment("".join(parts[::2]))
        source = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>{segment})"
            for i, part in enumerate(parts)
        )
        return cls(template, params, re.compile(source + r"\Z"))

    @property
    def is_pattern(self) -> bool:
        return self.regex is not None

    def match(self, channel: str) -> dict[str, str] | None:
        """The parameter values if ``channel`` matches, else ``None``."""
        if self.regex is None:
            return {} if channel == self.template else None
        found = self.regex.match(channel)
        return found.groupdict() if found else None

    def with_wildcards(self, wildcard: str) -> str:
        """The template with every parameter replaced by a broker's one-segment wildcard,
        e.g. ``"orders.*"`` for NATS or ``"orders/+"`` for MQTT."""
        return _PARAM.sub(wildcard, self.template)

    def __str__(self) -> str:
        return self.template
