"""Keyword options declared once, as a ``TypedDict`` per broker connection (``KafkaOptions``,
``RabbitOptions``...): the transport takes them as ``**options: Unpack[...]`` and checks
them here; a broker's router takes them beside its own and splits them here."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from fastapi_stream.core.errors import ConfigurationError

if TYPE_CHECKING:
    from fastapi_stream.core.transport import Transport

__all__ = ["check_options", "check_publish_options", "given", "split_options"]


def check_options(owner: str, options: Mapping[str, Any], declared: Collection[str]) -> None:
    """Refuse the keywords in ``options`` that ``owner`` does not declare (its options
    ``TypedDict``'s keys), as a signature would."""
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise TypeError(f"{owner} got unexpected option(s) {unknown}; it takes {sorted(declared)}")


def check_publish_options(transport: Transport, channel: str, options: Mapping[str, Any]) -> None:
    """Refuse broker options that ``transport``'s publishes do not take (its declared
    ``publish_options``): a misspelled option fails loudly instead of being ignored."""
    declared = transport.publish_options
    if declared is None or not options:
        return
    # Runs for every publish that carries options: no set is built unless one is unknown.
    unknown = [key for key in options if key not in declared]
    if unknown:
        raise ConfigurationError(
            f"unknown publish option(s) {sorted(unknown)} for {channel!r}: "
            f"{type(transport).__name__} takes {sorted(declared)}"
        )


def split_options(
    options: Mapping[str, Any], declared: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` in two: those in ``declared`` (a connection's, say
    ``KafkaOptions.__optional_keys__``) and the others (the router's)."""
    mine = {key: value for key, value in options.items() if key in declared}
    return mine, {key: value for key, value in options.items() if key not in declared}


def given(**options: Any) -> dict[str, Any]:
    """The ``options`` that are not ``None``: those a caller chose."""
    return {key: value for key, value in options.items() if value is not None}
