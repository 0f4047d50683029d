"""Reply channels (3.0.0) and their 2.6.0 equivalent, parameter locations, and channel
addresses that are no URI templates in 2.6.0."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import StreamRouter
from fastapi_stream.asyncapi import get_asyncapi
from fastapi_stream.asyncapi.v2_6 import uri_template
from tests.asyncapi.checks import assert_valid


class Shipment(BaseModel):
    id: int
    region: str


class Quote(BaseModel):
    total: float


def app_of(router: StreamRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


def test_every_replying_operation_has_a_reply_channel(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("quotes")
    async def quote(shipment: Shipment) -> Quote:
        return Quote(total=1.0)

    @router.subscriber("estimates")
    async def estimate(shipment: Shipment) -> Quote:
        return Quote(total=2.0)

    @router.subscriber("notes")
    async def note(shipment: Shipment) -> None: ...

    document = assert_valid(get_asyncapi(app_of(router)))
    replies = {k: o["reply"] for k, o in document["operations"].items() if "reply" in o}
    assert set(replies) == {"quote", "estimate"}
    for name, reply in replies.items():
        channel = document["channels"][f"{name}_reply"]
        assert channel["address"] is None  # the request's reply-to names it
        assert channel["messages"] == {
            f"{name}_reply": {"$ref": f"#/components/messages/{name}_reply"}
        }
        assert reply["messages"] == [{"$ref": f"#/channels/{name}_reply/messages/{name}_reply"}]


def test_2_6_sends_replies_on_the_reply_to_channel(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("quotes")
    async def quote(shipment: Shipment) -> Quote:
        return Quote(total=1.0)

    document = assert_valid(get_asyncapi(app_of(router), asyncapi_version="2.6.0"))
    reply = document["channels"]["{reply_to}"]
    assert reply["subscribe"]["operationId"] == "quote_reply"  # the app sends it
    assert reply["subscribe"]["message"] == {"$ref": "#/components/messages/quote_reply"}
    assert reply["parameters"]["reply_to"]["description"].startswith("The reply-to address")
    messages = document["components"]["messages"]
    assert {m["messageId"] for m in messages.values()} == {"quote_message", "quote_reply"}


def test_a_parameter_the_payload_carries_has_its_location(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("shipments.{region}")
    async def ship(shipment: Shipment, region: str) -> None: ...

    @router.subscriber("orders.{shop}")
    async def take(shipment: Shipment, shop: str) -> None: ...

    document = get_asyncapi(app_of(router))
    channels = {c["address"]: c for c in document["channels"].values()}
    assert channels["shipments.{region}"]["parameters"]["region"] == {
        "description": "The {region} part of the address.",
        "location": "$message.payload#/region",
    }
    assert "location" not in channels["orders.{shop}"]["parameters"]["shop"]


def test_2_6_channel_keys_are_uri_templates() -> None:
    assert uri_template("orders.{region}") == "orders.{region}"
    assert uri_template("logs.>") == "logs.%3E"
    assert uri_template("a b|c") == "a%20b%7Cc"
    assert uri_template("orders.#") == "orders.{wildcard}"
