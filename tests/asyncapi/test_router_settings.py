"""Router settings in the document: ``include_in_schema=False`` hides a router's message
handlers and publishers as it hides its HTTP routes; a router names, describes and tags
its broker's server; two routers on one broker are two distinguishable servers."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import StreamRouter
from fastapi_stream.asyncapi import get_asyncapi
from tests.asyncapi.checks import assert_valid

VERSIONS = ["3.0.0", "2.6.0"]


class Order(BaseModel):
    id: int


@pytest.mark.parametrize("version", VERSIONS)
def test_a_hidden_router_leaves_its_handlers_publishers_and_server_out(
    memory_url: str, version: str
) -> None:
    shown = StreamRouter(memory_url + "-shown")
    hidden = StreamRouter(memory_url + "-hidden", include_in_schema=False)

    @shown.subscriber("orders")
    async def take(order: Order) -> None: ...

    @hidden.subscriber("internal")
    @hidden.publisher("internal-done")
    async def churn(order: Order) -> Order:
        return order

    hidden.publisher("internal-audit")

    @hidden.get("/internal")
    async def internal_route() -> None: ...

    app = FastAPI()
    app.include_router(shown)
    app.include_router(hidden)
    document = assert_valid(get_asyncapi(app, asyncapi_version=version))
    assert "internal" not in str(document["channels"])
    assert list(document["servers"]) == ["memory"]
    assert "/internal" not in app.openapi()["paths"]  # as FastAPI does for HTTP routes


def test_a_router_included_with_include_in_schema_false_is_hidden(memory_url: str) -> None:
    parent = StreamRouter(memory_url)
    child = StreamRouter()  # joins the parent's broker
    grandchild = StreamRouter()

    @parent.subscriber("orders")
    async def take(order: Order) -> None: ...

    @child.subscriber("internal")
    async def churn(order: Order) -> None: ...

    @grandchild.subscriber("deeper")
    async def deeper(order: Order) -> None: ...

    grandchild.publisher("deeper-done")
    child.include_router(grandchild)
    parent.include_router(child, include_in_schema=False)
    app = FastAPI()
    app.include_router(parent)
    document = assert_valid(get_asyncapi(app))
    assert {c["address"] for c in document["channels"].values()} == {"orders"}


@pytest.mark.parametrize("version", VERSIONS)
def test_server_name_description_and_tags_come_from_the_router(
    memory_url: str, version: str
) -> None:
    router = StreamRouter(
        memory_url,
        server_name="orders",
        description="Orders of the shop",
        tags=["shop", "orders"],
    )

    @router.subscriber("orders")
    async def take(order: Order) -> None: ...

    app = FastAPI()
    app.include_router(router)
    document = assert_valid(get_asyncapi(app, asyncapi_version=version))
    server = document["servers"]["orders"]
    assert server["description"] == "Orders of the shop"
    assert server["tags"] == [{"name": "shop"}, {"name": "orders"}]
    channel = next(iter(document["channels"].values()))
    if version == "3.0.0":
        assert channel["servers"] == [{"$ref": "#/servers/orders"}]
    else:
        assert channel["servers"] == ["orders"]


@pytest.mark.parametrize("version", VERSIONS)
def test_two_routers_on_one_broker_are_told_apart(version: str) -> None:
    from fastapi_stream.rabbit import ExchangeType, RabbitExchange, RabbitRouter

    orders = RabbitRouter(prefix="/orders")
    events = RabbitRouter(exchange=RabbitExchange("events", type=ExchangeType.TOPIC))
    named = RabbitRouter(server_name="billing", description="Billing", prefix="/billing")
    for i, router in enumerate((orders, events, named)):

        @router.subscriber(f"queue-{i}")
        async def take(order: Order) -> None: ...

    app = FastAPI()
    for router in (orders, events, named):
        app.include_router(router)
    servers = assert_valid(get_asyncapi(app, asyncapi_version=version))["servers"]
    assert {name: server["description"] for name, server in servers.items()} == {
        "amqp": "RabbitMQ, default exchange (routes by queue name)",
        "amqp_events": "RabbitMQ, exchange 'events' (topic)",
        "billing": "Billing",
    }
