"""Server entries never hold credentials, whatever the URL form and even when a transport's
``describe()`` forgets to hide them."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fastapi_stream import StreamRouter
from fastapi_stream.asyncapi import get_asyncapi
from fastapi_stream.asyncapi.servers import address
from fastapi_stream.memory.transport import MemoryTransport
from tests.asyncapi.checks import assert_valid

SECRET = "S3ntinelPw"


class LeakyTransport(MemoryTransport):
    """A transport whose ``describe()`` returns the URL as given, secrets and all."""

    schemes = ("kafka",)

    def __init__(self, raw: str) -> None:
        super().__init__()
        self.raw = raw

    def describe(self) -> str:
        return self.raw


# (what describe() returns, protocol, host, pathname)
FORMS = [
    (f"kafka://alice:{SECRET}@broker:9092", "kafka", "broker:9092", None),
    (f"alice:{SECRET}@k1:9092,k2:9092", "kafka", "k1:9092,k2:9092", None),
    (f"kafka://alice:{SECRET}@k1:9092,k2:9092", "kafka", "k1:9092,k2:9092", None),
    (f"kafka://alice:pa,{SECRET}@k1:9092", "kafka", "k1:9092", None),
    (f"kafka://alice:a@b/{SECRET}@k1:9092", "kafka", "k1:9092", None),
    (f"amqp://guest:{SECRET}@rabbit:5672/vhost?password={SECRET}", "amqp", "rabbit:5672", "/vhost"),
    (f"amqps://guest:{SECRET}@rabbit/?token={SECRET}#{SECRET}", "amqps", "rabbit", None),
    (f"redis://:{SECRET}@cache:6379/0", "redis", "cache:6379", "/0"),
    (f"rediss://default:{SECRET}@cache:6380", "rediss", "cache:6380", None),
    (f"nats://{SECRET}@nats:4222", "nats", "nats:4222", None),
    (f"nats://u:{SECRET}@n1:4222, nats://v:{SECRET}@n2:4222", "nats", "n1:4222,n2:4222", None),
    (f"tls://u:{SECRET}@n1:4222", "nats", "n1:4222", None),
    (f"mqtt://user:{SECRET}@mosquitto:1883", "mqtt", "mosquitto:1883", None),
]


@pytest.mark.parametrize(("raw", "protocol", "host", "pathname"), FORMS)
def test_address_drops_user_information_query_and_fragment(
    raw: str, protocol: str, host: str, pathname: str | None
) -> None:
    assert address(LeakyTransport(raw)) == (protocol, host, pathname)


def app_for(router: StreamRouter) -> FastAPI:
    @router.subscriber("orders")
    async def take(order_id: int) -> None: ...

    app = FastAPI()
    app.include_router(router)
    return app


def assert_no_secret(app: FastAPI) -> None:
    for version in ("3.0.0", "2.6.0"):
        assert SECRET not in str(assert_valid(get_asyncapi(app, asyncapi_version=version)))
    client = TestClient(app)
    for path in ("/asyncapi", "/asyncapi.json", "/asyncapi.yaml"):
        response = client.get(path)
        assert response.status_code == 200
        assert SECRET not in response.text


@pytest.mark.parametrize("raw", [form[0] for form in FORMS])
def test_no_secret_in_any_document_or_page(raw: str) -> None:
    assert_no_secret(app_for(StreamRouter(LeakyTransport(raw))))


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{SECRET}@localhost:5672/orders?password={SECRET}",
        f"nats://user:{SECRET}@localhost:4222",
        f"nats://{SECRET}@localhost:4222",
        f"memory://{SECRET}@ignored",
    ],
)
def test_no_secret_with_real_transports(url: str) -> None:
    assert_no_secret(app_for(StreamRouter(url)))
