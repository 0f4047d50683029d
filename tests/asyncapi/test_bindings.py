"""Each broker's bindings come from its router's and subscribers' real settings and are
valid under the official binding schemas of ``@asyncapi/specs``, in 3.0.0 and 2.6.0
documents. No broker is contacted: documents are written without starting anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import StreamRouter
from fastapi_stream.asyncapi import get_asyncapi
from fastapi_stream.asyncapi.validate import binding_problems, binding_schema
from tests.asyncapi.checks import assert_valid

VERSIONS = ["3.0.0", "2.6.0"]


class Order(BaseModel):
    id: int
    region: str


def document(router: StreamRouter, version: str) -> dict[str, Any]:
    app = FastAPI()
    app.include_router(router)
    return assert_valid(get_asyncapi(app, asyncapi_version=version))


def bindings(node: Any, protocol: str, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(where, binding)`` of every ``protocol`` binding in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}/{key}"
            if key == "bindings" and isinstance(value, dict) and protocol in value:
                yield here, value[protocol]
            yield from bindings(value, protocol, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from bindings(value, protocol, f"{where}/{i}")


def assert_official(found: dict[str, Any], protocol: str, elements: set[str]) -> None:
    """Every ``protocol`` binding has an official schema that accepts it, and the elements
    expected to carry one do."""
    seen = set()
    for where, binding in bindings(found, protocol):
        element = next(
            name
            for part, name in (
                ("messages", "message"),
                ("operations", "operation"),
                ("publish", "operation"),
                ("subscribe", "operation"),
                ("channels", "channel"),
                ("servers", "server"),
            )
            if f"/{part}/" in where + "/"
        )
        version = binding["bindingVersion"]
        assert binding_schema(protocol, version, element) is not None, (where, version)
        seen.add(element)
    assert seen == elements
    assert binding_problems(found) == []


# -- RabbitMQ --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_rabbit_bindings(version: str) -> None:
    from fastapi_stream.rabbit import ExchangeType, RabbitExchange, RabbitQueue, RabbitRouter

    events = RabbitExchange("shop", type=ExchangeType.TOPIC, durable=False)
    router = RabbitRouter("amqp://guest:guest@localhost:5672/prod", exchange=events)

    @router.subscriber("orders.{region}", group="billing")
    async def bill(order: Order, region: str) -> None: ...

    @router.subscriber(RabbitQueue("audit", exclusive=True), exchange=events, routing_key="#")
    async def audit(order: Order) -> None: ...

    router.publisher("invoices", priority=5, expiration=2.5, persist=False)
    plain = RabbitRouter("amqp://guest:guest@localhost:5672/")

    @plain.subscriber("tasks")
    async def work(order: Order) -> None: ...

    found = document(router, version)
    binding_version = "0.3.0" if version == "3.0.0" else "0.2.0"
    assert_official(found, "amqp", {"channel", "operation"})
    exchange = {
        "name": "shop",
        "type": "topic",
        "durable": False,
        "autoDelete": False,
        "vhost": "prod",
    }
    if version == "3.0.0":
        server = found["servers"]["amqp_shop"]
        assert server["description"] == "RabbitMQ, exchange 'shop' (topic)"
        channels = {c["address"]: c for c in found["channels"].values()}
        operations = found["operations"]
        bill_op, audit_op = operations["bill"], operations["audit"]
        invoices_op = operations["send_invoices"]
    else:
        channels = found["channels"]
        bill_op = channels["orders.{region}"]["publish"]
        audit_op = channels["{wildcard}"]["publish"]
        invoices_op = channels["invoices"]["subscribe"]
        channels["#"] = channels["{wildcard}"]
    assert channels["orders.{region}"]["bindings"]["amqp"] == {
        "is": "routingKey",
        "exchange": exchange,
        "bindingVersion": binding_version,
    }
    assert channels["#"]["bindings"]["amqp"]["exchange"] == exchange
    # The group's own queue and the binding key, per subscriber.
    assert bill_op["bindings"]["amqp"]["cc"] == ["orders.*"]
    assert bill_op["bindings"]["amqp"]["x-queue"]["name"] == "orders.:region.billing"
    assert audit_op["bindings"]["amqp"]["x-queue"] == {
        "name": "audit",
        "durable": True,
        "exclusive": True,
        "autoDelete": False,
        "vhost": "prod",
    }
    assert invoices_op["bindings"]["amqp"] == {
        "cc": ["invoices"],
        "deliveryMode": 1,
        "mandatory": True,
        "priority": 5,
        "expiration": 2500,
        "bindingVersion": binding_version,
    }
    # On the default exchange a channel is a queue.
    found = document(plain, version)
    assert_official(found, "amqp", {"channel", "operation"})
    channel = found["channels"]["tasks"]
    assert channel["bindings"]["amqp"]["is"] == "queue"
    assert channel["bindings"]["amqp"]["queue"]["name"] == "tasks"


@pytest.mark.parametrize("version", VERSIONS)
def test_rabbit_correlation_id_is_a_message_property(version: str) -> None:
    from fastapi_stream.rabbit import RabbitRouter

    router = RabbitRouter()

    @router.subscriber("prices")
    async def price(order: Order) -> Order:
        return order

    found = document(router, version)
    messages = found["components"]["messages"]
    assert all("correlationId" not in m for m in messages.values())
    operation = (
        found["operations"]["price"]
        if version == "3.0.0"
        else found["channels"]["prices"]["publish"]
    )
    assert operation["bindings"]["amqp"]["x-correlation-id"]["property"] == "correlation_id"
    if version == "3.0.0":
        assert "address" not in operation["reply"]  # reply_to is a property too


# -- Kafka -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_kafka_bindings(version: str) -> None:
    from fastapi_stream.kafka import KafkaRouter, KafkaTopic

    router = KafkaRouter(
        "localhost:9092", client_id="shop", topics=[KafkaTopic("orders", 3, replication=1)]
    )

    @router.subscriber("orders", group_id="billing")
    async def bill(order: Order) -> None: ...

    router.publisher("invoices")
    found = document(router, version)
    assert_official(found, "kafka", {"channel", "operation"})
    binding_version = "0.5.0" if version == "3.0.0" else "0.4.0"
    orders = found["channels"]["orders"]["bindings"]["kafka"]
    assert orders == {
        "topic": "orders",
        "partitions": 3,
        "replicas": 1,
        "bindingVersion": binding_version,
    }
    operation = (
        found["operations"]["bill"]
        if version == "3.0.0"
        else found["channels"]["orders"]["publish"]
    )
    assert operation["bindings"]["kafka"]["groupId"] == {"type": "string", "enum": ["billing"]}
    assert operation["bindings"]["kafka"]["clientId"] == {"type": "string", "enum": ["shop"]}


def test_a_broker_transport_subclassed_elsewhere_keeps_its_brokers_bindings() -> None:
    """Bindings are found from the package of the transport's class or of a base: a
    ``KafkaTransport`` subclass defined in an application is documented as Kafka."""
    from fastapi_stream.kafka import KafkaTopic, KafkaTransport

    class Namespaced(KafkaTransport):
        pass

    router = StreamRouter(Namespaced(client_id="shop", topics=[KafkaTopic("orders", 3)]))

    @router.subscriber("orders", group="billing")
    async def bill(order: Order) -> None: ...

    found = document(router, "3.0.0")
    assert found["channels"]["orders"]["bindings"]["kafka"]["partitions"] == 3
    assert found["operations"]["bill"]["bindings"]["kafka"]["clientId"]["enum"] == ["shop"]


# -- NATS ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_nats_bindings(version: str) -> None:
    from fastapi_stream.nats import JStream, NatsRouter

    router = NatsRouter("nats://localhost:4222")

    @router.subscriber("orders.*", queue="billing")
    async def bill(order: Order) -> None: ...

    @router.subscriber("payments.>", stream=JStream("payments"), durable="ledger", pull=True)
    async def ledger(order: Order) -> None: ...

    found = document(router, version)
    assert_official(found, "nats", {"operation"})
    if version == "3.0.0":
        bill_op, ledger_op = found["operations"]["bill"], found["operations"]["ledger"]
    else:
        bill_op = found["channels"]["orders.*"]["publish"]
        ledger_op = found["channels"]["payments.%3E"]["publish"]
    assert bill_op["bindings"]["nats"] == {"queue": "billing", "bindingVersion": "0.1.0"}
    assert ledger_op["bindings"]["nats"] == {
        "x-durable": "ledger",
        "x-pull": True,
        "x-stream": "payments",
        "bindingVersion": "0.1.0",
    }


# -- Redis -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_redis_bindings(version: str) -> None:
    from fastapi_stream.redis import RedisRouter, StreamSub

    router = RedisRouter("redis://localhost:6379")

    @router.subscriber(stream=StreamSub("orders", group="billing", consumer="one"))
    async def bill(order: Order) -> None: ...

    @router.subscriber(list="tasks")
    async def work(order: Order) -> None: ...

    @router.subscriber("alerts.{level}")
    async def alert(order: Order, level: str) -> None: ...

    router.publisher(stream="invoices")
    found = document(router, version)
    # AsyncAPI reserves the redis binding without a schema: nothing official to check
    # against, which this asserts, so a schema appearing in @asyncapi/specs is noticed.
    for element in ("server", "channel", "operation", "message"):
        assert binding_schema("redis", "0.1.0", element) is None
    assert binding_problems(found) == []
    channels = (
        {c["address"]: c for c in found["channels"].values()}
        if version == "3.0.0"
        else found["channels"]
    )
    redis = {address: c["bindings"]["redis"] for address, c in channels.items() if address}
    assert redis == {
        "orders": {
            "channel": "orders",
            "method": "xreadgroup",
            "groupName": "billing",
            "consumerName": "one",
            "bindingVersion": "custom",
        },
        "tasks": {"channel": "tasks", "method": "lpop", "bindingVersion": "custom"},
        "alerts.{level}": {
            "channel": "alerts.*",
            "method": "psubscribe",
            "bindingVersion": "custom",
        },
        "invoices": {"channel": "invoices", "method": "xadd", "bindingVersion": "custom"},
    }


def test_a_binding_the_official_schema_refuses_is_reported() -> None:
    bad = {
        "asyncapi": "2.6.0",
        "info": {"title": "t", "version": "1"},
        "channels": {
            "a": {
                "bindings": {
                    "amqp": {"is": "queue", "exchange": {"name": "x"}, "bindingVersion": "0.2.0"}
                }
            }
        },
    }
    assert binding_problems(bad) == ["channels/a/bindings/amqp/is: 'routingKey' was expected"]
