"""The document built from the StreamRouters of an app, in 3.0.0 and 2.6.0."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field, create_model

from fastapi_stream import StreamRouter, Transport
from fastapi_stream.asyncapi import get_asyncapi, stream_routers
from fastapi_stream.memory.transport import MemoryTransport
from tests.asyncapi.checks import assert_valid

VERSIONS = ["3.0.0", "2.6.0"]


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


class Line(BaseModel):
    sku: str = Field(description="Stock keeping unit", examples=["A-1"])
    size: Size = Size.SMALL


class Order(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 1, "lines": []}]})

    id: int
    lines: list[Line]
    note: str | None = None


class Receipt(BaseModel):
    order_id: int


def schemas(document: dict[str, Any]) -> dict[str, Any]:
    return dict(document["components"]["schemas"])


def message_of(document: dict[str, Any], operation: str) -> dict[str, Any]:
    """The message of a 3.0.0 operation, through its channel (an operation names it only
    when its channel carries other messages too)."""
    found = document["operations"][operation]
    if "messages" in found:
        _, _, channel, _, name = found["messages"][0]["$ref"].split("/")
    else:
        channel = found["channel"]["$ref"].rsplit("/", 1)[-1]
        (name,) = document["channels"][channel]["messages"]
    ref = document["channels"][channel]["messages"][name]["$ref"]
    return dict(document["components"]["messages"][ref.rsplit("/", 1)[-1]])


def shop(url: str, **options: Any) -> tuple[FastAPI, StreamRouter]:
    router = StreamRouter(url, **options)

    @router.subscriber("orders.{region}", title="Take orders")
    @router.publisher("receipts", description="One receipt per order")
    async def take(
        order: Order,
        region: str,
        trace_id: str = Header(),
        version: int = Header(1, alias="x-version"),
    ) -> Receipt:
        """Take an order </script><script>alert(1)</script>."""
        return Receipt(order_id=order.id)

    @router.subscriber("audit", include_in_schema=False)
    async def audit(body: str) -> None: ...

    router.publisher("hidden", include_in_schema=False)
    app = FastAPI(
        title="Shop",
        version="2.1.0",
        description="Orders and receipts",
        contact={"name": "Ops", "email": "ops@example.com"},
        license_info={"name": "MIT", "identifier": "MIT"},
        openapi_tags=[{"name": "orders", "description": "Order flow"}],
    )
    app.include_router(router)
    return app, router


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid(memory_url: str, version: str) -> None:
    app, _ = shop(memory_url)
    assert assert_valid(get_asyncapi(app, asyncapi_version=version))["asyncapi"] == version


def test_metadata_comes_from_the_app_unless_given(memory_url: str) -> None:
    app, _ = shop(memory_url)
    info = get_asyncapi(app)["info"]
    assert info == {
        "title": "Shop",
        "version": "2.1.0",
        "description": "Orders and receipts",
        "contact": {"name": "Ops", "email": "ops@example.com"},
        "license": {"name": "MIT"},  # AsyncAPI has no license identifier
        "tags": [{"name": "orders", "description": "Order flow"}],
    }
    info = get_asyncapi(app, title="Events", version="9", tags=[])["info"]
    assert (info["title"], info["version"]) == ("Events", "9")
    v2 = get_asyncapi(app, asyncapi_version="2.6.0")
    assert "tags" not in v2["info"] and v2["tags"] == [
        {"name": "orders", "description": "Order flow"}
    ]


def test_operations_channels_and_messages_3_0(memory_url: str) -> None:
    app, _ = shop(memory_url)
    document = get_asyncapi(app)
    assert set(document["operations"]) == {"take", "send_receipts"}
    take = document["operations"]["take"]
    assert take["action"] == "receive" and take["title"] == "Take orders"
    assert take["description"].startswith("Take an order </script>")  # the docstring
    channel = document["channels"][take["channel"]["$ref"].rsplit("/", 1)[-1]]
    assert channel["address"] == "orders.{region}"
    assert channel["parameters"] == {"region": {"description": "The {region} part of the address."}}
    assert channel["servers"] == [{"$ref": "#/servers/memory"}]
    message = message_of(document, "take")
    assert message["payload"] == {"$ref": "#/components/schemas/Order"}
    assert message["correlationId"]["location"] == "$message.header#/correlation_id"
    assert message["examples"] == [{"payload": {"id": 1, "lines": []}}]
    # The handler's return value: the reply to a request, on a channel of its own without an
    # address, and what the stacked publisher sends.
    reply = take["reply"]
    assert reply["address"]["location"] == "$message.header#/reply_to"
    assert reply["channel"] == {"$ref": "#/channels/take_reply"}
    assert reply["messages"] == [{"$ref": "#/channels/take_reply/messages/take_reply"}]
    reply_channel = document["channels"]["take_reply"]
    assert reply_channel["address"] is None
    assert reply_channel["messages"] == {"take_reply": {"$ref": "#/components/messages/take_reply"}}
    assert document["components"]["messages"]["take_reply"]["payload"] == {
        "$ref": "#/components/schemas/Receipt"
    }
    send = document["operations"]["send_receipts"]
    assert send["action"] == "send" and send["description"] == "One receipt per order"
    assert message_of(document, "send_receipts")["payload"] == {
        "$ref": "#/components/schemas/Receipt"
    }


def test_include_in_schema_false_leaves_out_subscribers_and_publishers(memory_url: str) -> None:
    app, _ = shop(memory_url)
    for version in VERSIONS:
        text = str(get_asyncapi(app, asyncapi_version=version))
        assert "audit" not in text and "hidden" not in text


def test_nested_models_enums_optional_fields_and_examples(memory_url: str) -> None:
    app, _ = shop(memory_url)
    found = schemas(get_asyncapi(app))
    assert set(found) == {"Order", "Line", "Size", "Receipt"}
    assert found["Order"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert found["Order"]["required"] == ["id", "lines"]  # note is optional
    assert found["Order"]["properties"]["note"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    # No $ref beside the default: draft-07 would ignore the default.
    assert found["Line"]["properties"]["size"] == {
        "allOf": [{"$ref": "#/components/schemas/Size"}],
        "default": "small",
    }
    assert found["Size"]["enum"] == ["small", "large"]
    assert found["Line"]["properties"]["sku"]["examples"] == ["A-1"]
    assert found["Line"]["properties"]["sku"]["description"] == "Stock keeping unit"


def test_headers_schema_from_header_parameters(memory_url: str) -> None:
    app, _ = shop(memory_url)
    headers = message_of(get_asyncapi(app), "take")["headers"]
    assert headers["type"] == "object"
    assert headers["required"] == ["trace-id"]
    assert headers["properties"]["trace-id"]["type"] == "string"
    assert headers["properties"]["x-version"]["type"] == "integer"
    assert headers["properties"]["x-version"]["default"] == 1


def test_2_6_names_operations_from_the_other_side(memory_url: str) -> None:
    app, _ = shop(memory_url)
    document = assert_valid(get_asyncapi(app, asyncapi_version="2.6.0"))
    orders = document["channels"]["orders.{region}"]
    assert orders["publish"]["operationId"] == "take"  # others publish, this app receives
    assert orders["publish"]["message"] == {"$ref": "#/components/messages/take_message"}
    assert orders["parameters"] == {
        "region": {"schema": {"type": "string"}, "description": "The {region} part of the address."}
    }
    assert document["channels"]["receipts"]["subscribe"]["operationId"] == "send_receipts"
    assert document["servers"]["memory"]["protocol"] == "memory"


def test_two_subscribers_of_one_address_in_2_6(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("events", group="a")
    async def first(n: int) -> None: ...

    @router.subscriber("events", group="b")
    async def second(s: str) -> None: ...

    app = FastAPI()
    app.include_router(router)
    v3 = assert_valid(get_asyncapi(app))
    assert len(v3["channels"]) == 1 and set(v3["operations"]) == {"first", "second"}
    v2 = assert_valid(get_asyncapi(app, asyncapi_version="2.6.0"))
    assert v2["channels"]["events"]["publish"]["message"] == {
        "oneOf": [
            {"$ref": "#/components/messages/first_message"},
            {"$ref": "#/components/messages/second_message"},
        ]
    }


def test_two_stream_routers_make_two_servers(memory_url: str) -> None:
    first = StreamRouter(memory_url + "-a")
    second = StreamRouter(memory_url + "-b", prefix="/b")

    @first.subscriber("orders")
    async def a(order: Order) -> None: ...

    @second.subscriber("orders")
    async def b(order: Order) -> None: ...

    app = FastAPI()
    app.include_router(first)
    app.include_router(second, prefix="/v1")
    assert stream_routers(app) == [first, second]
    for version in VERSIONS:
        document = assert_valid(get_asyncapi(app, asyncapi_version=version))
        assert set(document["servers"]) == {"memory", "memory_2"}
    document = get_asyncapi(app)
    assert {c["address"] for c in document["channels"].values()} == {"orders"}
    assert sorted(c["servers"][0]["$ref"] for c in document["channels"].values()) == [
        "#/servers/memory",
        "#/servers/memory_2",
    ]
    v2 = get_asyncapi(app, asyncapi_version="2.6.0")
    assert v2["channels"]["orders"]["servers"] == ["memory", "memory_2"]


def test_routers_under_prefixes_and_nested_routers_are_found(memory_url: str) -> None:
    router = StreamRouter(memory_url, prefix="/events")
    child = StreamRouter()  # no broker: joins the parent's

    @child.subscriber("child-channel")
    async def from_child(n: int) -> None: ...

    router.include_router(child)
    outer = APIRouter(prefix="/api")
    outer.include_router(router, prefix="/v1")
    app = FastAPI()
    app.include_router(outer)
    document = assert_valid(get_asyncapi(app))
    assert [c["address"] for c in document["channels"].values()] == ["child-channel"]
    assert len(document["servers"]) == 1


def test_router_without_docs_routes_is_left_out(memory_url: str) -> None:
    shown = StreamRouter(memory_url + "-a")
    hidden = StreamRouter(memory_url + "-b", schema_url=None)

    @hidden.subscriber("secret")
    async def secret(n: int) -> None: ...

    app = FastAPI()
    app.include_router(shown)
    app.include_router(hidden)
    document = assert_valid(get_asyncapi(app))
    assert document["channels"] == {} and len(document["servers"]) == 1
    # ... unless asked for explicitly
    assert "secret" in str(get_asyncapi(app, routers=[hidden]))


class Opaque:
    """A class pydantic cannot describe."""


def test_several_body_parameters_batch_and_undescribable_types(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("pairs")
    async def pair(left: int, right: Line) -> None: ...

    @router.subscriber("pairs-2")
    async def pair_again(x: str, y: str) -> None: ...

    @router.subscriber("lines", batch=True)
    async def lines(items: list[Line]) -> None: ...

    @router.subscriber("opaque")
    async def opaque(body: Any) -> Opaque:
        return Opaque()

    app = FastAPI()
    app.include_router(router)
    document = assert_valid(get_asyncapi(app))
    assert message_of(document, "pair")["payload"] == {"$ref": "#/components/schemas/pair_payload"}
    payload = schemas(document)["pair_payload"]
    assert payload["required"] == ["left", "right"]
    assert payload["properties"]["right"] == {"$ref": "#/components/schemas/Line"}
    assert "pair_again_payload" in schemas(document)
    assert message_of(document, "lines")["payload"] == {"$ref": "#/components/schemas/Line"}
    reply = document["operations"]["opaque"]["reply"]["messages"][0]["$ref"].rsplit("/", 1)[-1]
    assert document["components"]["messages"][reply]["payload"] == {}
    assert_valid(get_asyncapi(app, asyncapi_version="2.6.0"))


def test_two_models_with_one_name_get_two_schemas(memory_url: str) -> None:
    router = StreamRouter(memory_url)
    for channel, field in (("one", "a"), ("two", "b")):
        model = create_model("Event", **{field: (int, ...)})

        async def handler(event: Any) -> None: ...

        handler.__annotations__["event"] = model
        handler.__name__ = channel
        router.subscriber(channel)(handler)
    app = FastAPI()
    app.include_router(router)
    document = assert_valid(get_asyncapi(app))
    refs = {message_of(document, op)["payload"]["$ref"] for op in ("one", "two")}
    assert len(refs) == 2


class BindingsTransport(MemoryTransport):
    """A transport that contributes bindings, as broker transports do."""

    def asyncapi_bindings(
        self, element: str, source: Any, asyncapi_version: str
    ) -> Mapping[str, Any] | None:
        if element == "operation" and getattr(source, "group", None):
            version = "0.5.0" if asyncapi_version == "3.0.0" else "0.4.0"
            return {
                "kafka": {
                    "groupId": {"type": "string", "enum": [source.group]},
                    "bindingVersion": version,
                }
            }
        if element == "channel":
            version = "0.5.0" if asyncapi_version == "3.0.0" else "0.4.0"
            return {"kafka": {"topic": str(source.channel), "bindingVersion": version}}
        return None


@pytest.mark.parametrize("version", VERSIONS)
def test_a_transport_contributes_bindings(memory_url: str, version: str) -> None:
    transport: Transport = BindingsTransport.from_url(memory_url)
    router = StreamRouter(transport)

    @router.subscriber("orders", group="billing")
    async def bill(order: Order) -> None: ...

    app = FastAPI()
    app.include_router(router)
    document = assert_valid(get_asyncapi(app, asyncapi_version=version))
    if version == "3.0.0":
        operation = document["operations"]["bill"]
        channel = document["channels"]["orders"]
    else:
        channel = document["channels"]["orders"]
        operation = channel["publish"]
    assert operation["bindings"]["kafka"]["groupId"]["enum"] == ["billing"]
    assert channel["bindings"]["kafka"]["topic"] == "orders"


def test_an_unknown_version_is_refused(memory_url: str) -> None:
    app, _ = shop(memory_url)
    with pytest.raises(ValueError, match=r"2\.6\.0"):
        get_asyncapi(app, asyncapi_version="1.0.0")


def test_an_app_without_stream_routers_has_an_empty_valid_document() -> None:
    for version in VERSIONS:
        document = assert_valid(get_asyncapi(FastAPI(title="Plain"), asyncapi_version=version))
        assert document["channels"] == {} and document["servers"] == {}
