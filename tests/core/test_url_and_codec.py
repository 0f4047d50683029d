"""Broker URLs never leak secrets; bodies encode and decode by content type."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from fastapi_stream.core import codec
from fastapi_stream.core.channel import ChannelPattern
from fastapi_stream.core.url import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:s3cret@localhost:5672/", "amqp://guest:***@localhost:5672/"),
        ("kafka://alice:s3cret@k1:9092,k2:9092", "kafka://alice:***@k1:9092,k2:9092"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("nats://s3cret@localhost:4222", "nats://***@localhost:4222"),
        ("mqtt://host?password=s3cret&client_id=a", "mqtt://host?password=***&client_id=a"),
        ("memory://", "memory://"),
    ],
)
def test_redact_hides_passwords_and_tokens(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert "s3cret" not in redact(url)


class Model(BaseModel):
    id: int


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        (Model(id=1), b'{"id":1}', "application/json"),
        ({"a": [1, 2]}, b'{"a":[1,2]}', "application/json"),
        (Point(x=2), b'{"x":2}', "application/json"),
        ("héllo", "héllo".encode(), "text/plain"),
        (b"\x00\x01", b"\x00\x01", "application/octet-stream"),
        (None, b"", None),
    ],
)
def test_encode(value: object, body: bytes, content_type: str | None) -> None:
    assert codec.encode(value) == (body, content_type)


def test_decode_by_content_type() -> None:
    assert codec.decode(b'{"a": 1}', "application/json; charset=utf-8") == {"a": 1}
    assert codec.decode(b'{"a": 1}', "application/vnd.api+json") == {"a": 1}
    assert codec.decode(b"text", "text/plain") == "text"
    assert codec.decode(b"\xff", "application/octet-stream") == b"\xff"
    assert codec.decode(b"[1]", None) == [1]
    assert codec.decode(b"plain", None) == "plain"
    assert codec.decode(b"\xff\xfe", None) == b"\xff\xfe"
    assert codec.decode(b"", None) is None


def test_channel_patterns_match_one_segment_per_parameter() -> None:
    pattern = ChannelPattern.parse("orders.{region}.{kind}")
    assert pattern.match("orders.eu.new") == {"region": "eu", "kind": "new"}
    assert pattern.match("orders.eu") is None
    assert pattern.match("orders.eu.new.extra") is None
    assert pattern.with_wildcards("*") == "orders.*.*"
    assert ChannelPattern.parse("plain").match("plain") == {}
    with pytest.raises(ValueError, match="twice"):
        ChannelPattern.parse("a.{x}.{x}")


def test_a_segment_ends_at_the_separator_the_template_uses() -> None:
    # MQTT levels are separated by "/", so a level may hold a dot; NATS tokens the reverse.
    assert ChannelPattern.parse("home/{room}/temp").match("home/a.b/temp") == {"room": "a.b"}
    assert ChannelPattern.parse("orders.{region}").match("orders.eu/west") == {"region": "eu/west"}
    assert ChannelPattern.parse("{anything}").match("a.b") is None  # no separator shown


def test_memory_urls_size_their_engine() -> None:
    from fastapi_stream import ConfigurationError
    from fastapi_stream.memory import MemoryTransport

    transport = MemoryTransport("memory://sized-engine?max_queue=5&publish_timeout=0.5")
    assert (transport.engine.max_queue, transport.engine.publish_timeout) == (5, 0.5)
    with pytest.raises(ConfigurationError, match="not colour"):
        MemoryTransport("memory://x?colour=red")
    with pytest.raises(ConfigurationError, match="numbers"):
        MemoryTransport("memory://y?max_queue=lots")
