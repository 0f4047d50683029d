"""Broker URLs: which transport serves a scheme, and how to show a URL without secrets."""

from __future__ import annotations

import importlib
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.transport import Transport

__all__ = ["redact", "transport_for"]

#: scheme -> (module, class, pip extra). Broker modules are imported only when used.
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("fastapi_stream.memory.transport", "MemoryTransport", None),
    "kafka": ("fastapi_stream.kafka.transport", "KafkaTransport", "kafka"),
    "amqp": ("fastapi_stream.rabbit.transport", "RabbitTransport", "rabbit"),
    "amqps": ("fastapi_stream.rabbit.transport", "RabbitTransport", "rabbit"),
    "nats": ("fastapi_stream.nats.transport", "NatsTransport", "nats"),
    "redis": ("fastapi_stream.redis.transport", "RedisTransport", "redis"),
    "rediss": ("fastapi_stream.redis.transport", "RedisTransport", "redis"),
    "mqtt": ("fastapi_stream.mqtt.transport", "MqttTransport", "mqtt"),
    "mqtts": ("fastapi_stream.mqtt.transport", "MqttTransport", "mqtt"),
}

_SECRET_QUERY_KEYS = {"password", "pass", "pwd", "token", "secret", "key", "sasl_password"}


def transport_for(url: str) -> Transport:
    """The transport for ``url``, chosen by its scheme (``kafka://``, ``amqp://``...)."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    known = ", ".join(f"{s}://" for s in _SCHEMES)
    if not scheme:
        raise ConfigurationError(
            f"broker URL {redact(url)!r} has no scheme; start it with one of {known}"
        )
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"broker URL {redact(url)!r}: unknown scheme {scheme!r}; use one of {known}"
        )
    module_name, class_name, extra = _SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"{scheme}:// is not supported by this version of fastapi-stream yet"
            ) from exc
        raise ImportError(
            f'{scheme}:// needs an optional dependency: pip install "fastapi-stream[{extra}]"'
        ) from exc
    transport_class = cast(type[Transport], getattr(module, class_name))
    return transport_class.from_url(url)


def redact(url: str) -> str:
    """``url`` without passwords or tokens: ``amqp://guest:guest@host/`` becomes
    ``amqp://guest:***@host/``. Safe for logs, docs and health output."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if has_password else f"***@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
        )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
