"""Each exchange type routes the same on the real RabbitMQ and in TestStreamBroker: every
test runs the same assertions in both modes (FastStream #1110 and #2513 are the bugs
to beat: a test broker that ignores routing keys or ``#``)."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_stream.rabbit import (
    ExchangeType,
    RabbitExchange,
    RabbitQueue,
    RabbitRouter,
)

from .conftest import MODES, publish_all, router

pytestmark = pytest.mark.anyio


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def exchange(uid: str, kind: ExchangeType, **options: Any) -> RabbitExchange:
    return RabbitExchange(
        f"test.{kind.value}.{uid}", type=kind, durable=False, auto_delete=True, **options
    )


def queue(uid: str, name: str, **options: Any) -> RabbitQueue:
    return RabbitQueue(f"test.{uid}.{name}", durable=False, auto_delete=True, **options)


def record(
    rabbit: RabbitRouter,
    received: dict[str, list[str]],
    name: str,
    target: str | RabbitQueue,
    ex: RabbitExchange | None = None,
    **options: Any,
) -> None:
    """Subscribe ``target`` and record what it gets under ``name``."""
    received.setdefault(name, [])

    @rabbit.subscriber(target, ex, **options)
    async def handle(text: str) -> None:
        received[name].append(text)


def total(received: dict[str, list[str]]) -> int:
    return sum(len(texts) for texts in received.values())


def sort(received: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: sorted(texts) for name, texts in received.items()}


async def test_topic_exchange_wildcards(mode: str, uid: str) -> None:
    topic = exchange(uid, ExchangeType.TOPIC)
    rabbit = router(uid)
    received: dict[str, list[str]] = {}
    bindings = {"star": "orders.*", "hash": "orders.#", "eu": "#.eu", "third_eu": "*.*.eu"}
    for name, key in bindings.items():
        record(rabbit, received, name, queue(uid, name, routing_key=key), topic)
    keys = ["orders", "orders.eu", "orders.us.eu", "invoices.eu", "other"]
    expected = {
        "star": ["orders.eu"],
        "hash": ["orders", "orders.eu", "orders.us.eu"],
        "eu": ["invoices.eu", "orders.eu", "orders.us.eu"],
        "third_eu": ["orders.us.eu"],
    }
    await publish_all(
        mode,
        rabbit,
        [(key, key, {"exchange": topic, "mandatory": False}) for key in keys],
        expect=lambda: total(received) >= 8,
    )
    assert sort(received) == expected


async def test_topic_path_parameters(mode: str, uid: str) -> None:
    topic = exchange(uid, ExchangeType.TOPIC)
    rabbit = router(uid)
    levels: list[tuple[str, str]] = []

    @rabbit.subscriber(queue(uid, "logs", routing_key=f"{uid}.logs.{{level}}"), topic)
    async def handle(text: str, level: str) -> None:
        levels.append((level, text))

    await publish_all(
        mode,
        rabbit,
        [
            ("disk full", f"{uid}.logs.error", {"exchange": topic}),
            ("hello", f"{uid}.logs.info", {"exchange": topic}),
            ("too deep", f"{uid}.logs.info.x", {"exchange": topic, "mandatory": False}),
        ],
        expect=lambda: len(levels) >= 2,
    )
    assert sorted(levels) == [("error", "disk full"), ("info", "hello")]


async def test_direct_exchange(mode: str, uid: str) -> None:
    direct = exchange(uid, ExchangeType.DIRECT)
    rabbit = router(uid)
    received: dict[str, list[str]] = {}
    record(rabbit, received, "a", queue(uid, "a", routing_key="a"), direct)
    record(rabbit, received, "also_a", queue(uid, "also_a", routing_key="a"), direct)
    record(rabbit, received, "b", queue(uid, "b", routing_key="b"), direct)
    await publish_all(
        mode,
        rabbit,
        [(key, key, {"exchange": direct, "mandatory": False}) for key in ("a", "b", "c")],
        expect=lambda: total(received) >= 3,
    )
    assert sort(received) == {"a": ["a"], "also_a": ["a"], "b": ["b"]}


async def test_fanout_exchange(mode: str, uid: str) -> None:
    fanout = exchange(uid, ExchangeType.FANOUT)
    rabbit = router(uid)
    received: dict[str, list[str]] = {}
    record(rabbit, received, "first", queue(uid, "first"), fanout)
    record(rabbit, received, "second", queue(uid, "second"), fanout)
    await publish_all(
        mode,
        rabbit,
        [(key, key, {"exchange": fanout}) for key in ("x", "y.z")],
        expect=lambda: total(received) >= 4,
    )
    assert sort(received) == {"first": ["x", "y.z"], "second": ["x", "y.z"]}


async def test_headers_exchange(mode: str, uid: str) -> None:
    headers = exchange(uid, ExchangeType.HEADERS)
    rabbit = router(uid)
    received: dict[str, list[str]] = {}
    wanted = {"kind": "order", "region": "eu"}
    for match in ("all", "any"):
        record(
            rabbit,
            received,
            match,
            queue(uid, match, bind_arguments={"x-match": match, **wanted}),
            headers,
        )
    sent = {
        "eu-order": {"kind": "order", "region": "eu"},
        "us-order": {"kind": "order", "region": "us"},
        "invoice": {"kind": "invoice"},
    }
    await publish_all(
        mode,
        rabbit,
        [
            (text, "h", {"exchange": headers, "headers": values, "mandatory": False})
            for text, values in sent.items()
        ],
        expect=lambda: total(received) >= 3,
    )
    assert sort(received) == {"all": ["eu-order"], "any": ["eu-order", "us-order"]}


async def test_default_exchange_routes_by_queue_name(mode: str, uid: str) -> None:
    direct = exchange(uid, ExchangeType.DIRECT)
    rabbit = router(uid)
    received: dict[str, list[str]] = {}
    plain = queue(uid, "plain")
    bound = queue(uid, "bound", routing_key="elsewhere")
    record(rabbit, received, "plain", plain)
    record(rabbit, received, "bound", bound, direct)
    # Every queue is bound to the default exchange by its name, whatever else it is bound to.
    await publish_all(
        mode,
        rabbit,
        [("one", plain.name, {}), ("two", bound.name, {})],
        expect=lambda: total(received) >= 2,
    )
    assert sort(received) == {"plain": ["one"], "bound": ["two"]}


async def test_exchange_to_exchange_binding(mode: str, uid: str) -> None:
    upstream = exchange(uid, ExchangeType.TOPIC)
    downstream = RabbitExchange(
        f"test.down.{uid}",
        type=ExchangeType.FANOUT,
        durable=False,
        auto_delete=True,
        bind_to=upstream,
        routing_key="orders.#",
    )
    rabbit = router(uid)
    received: dict[str, list[str]] = {}
    record(rabbit, received, "down", queue(uid, "down"), downstream)
    await publish_all(
        mode,
        rabbit,
        [
            ("orders.eu", "orders.eu", {"exchange": upstream}),
            ("invoices.eu", "invoices.eu", {"exchange": upstream, "mandatory": False}),
            ("direct", "anything", {"exchange": downstream}),
        ],
        expect=lambda: total(received) >= 2,
    )
    assert sort(received) == {"down": ["direct", "orders.eu"]}


async def test_consumers_of_one_queue_compete_and_groups_each_get_all(mode: str, uid: str) -> None:
    topic = exchange(uid, ExchangeType.TOPIC)
    rabbit = router(uid, exchange=topic, queue_arguments={"x-expires": 30_000})
    received: dict[str, list[str]] = {}
    channel = f"{uid}.jobs"
    record(rabbit, received, "worker-1", channel)
    record(rabbit, received, "worker-2", channel)
    record(rabbit, received, "billing", channel, group="billing")
    record(rabbit, received, "shipping", channel, group="shipping")
    texts = [str(n) for n in range(10)]
    await publish_all(
        mode,
        rabbit,
        [(text, channel, {}) for text in texts],
        expect=lambda: total(received) >= 30,
    )
    workers = received["worker-1"] + received["worker-2"]
    assert sorted(workers) == sorted(texts), "each message once to one of the workers"
    assert received["worker-1"] and received["worker-2"]
    assert sorted(received["billing"]) == sorted(texts)
    assert sorted(received["shipping"]) == sorted(texts)
