"""Server entries: a broker's protocol, host and path, never its credentials.

A transport's ``describe()`` already hides passwords, but the document does not rely on
it: whatever the form of the address (``kafka://user:pw@h1:9092,h2:9092``,
``user:pw@h1:9092``, ``nats://token@host``, ``amqp://guest:pw@host/vhost?password=pw``,
several URLs separated by commas), the user information, the query and the fragment are
dropped here.
"""

from __future__ import annotations

import re

from fastapi_stream.core.transport import Transport

__all__ = ["address"]

# A new URL in a list ("nats://a:4222, nats://b:4222"); a comma elsewhere (a Kafka host
# list, or a password) does not split.
_NEXT_URL = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
#: URL schemes that AsyncAPI names otherwise (a transport option, or its own TLS name).
_PROTOCOLS = {"tls": "nats", "mqtts": "secure-mqtt"}


def address(transport: Transport) -> tuple[str, str, str | None]:
    """``(protocol, host, pathname)`` of the broker behind ``transport``."""
    described = transport.describe()
    protocol = ""
    hosts: list[str] = []
    pathname: str | None = None
    for item in _NEXT_URL.split(described.strip()):
        scheme, has_scheme, rest = item.strip().partition("://")
        if not has_scheme:
            scheme, rest = "", item.strip()
        # Everything up to the last "@" is user information, whatever characters the
        # password holds; the query and the fragment may carry tokens.
        rest = rest.rpartition("@")[2]
        rest = re.split(r"[?#]", rest, maxsplit=1)[0]
        host, _, path = rest.partition("/")
        if host:
            hosts.append(host)
        if pathname is None and path:
            pathname = "/" + path
        protocol = protocol or scheme.lower()
    if not protocol:
        protocol = transport.schemes[0] if transport.schemes else "unknown"
    return _PROTOCOLS.get(protocol, protocol), ",".join(hosts) or "localhost", pathname
