"""The docs routes: where they are, when they exist, who may see them."""

from __future__ import annotations

import pytest
import yaml
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, routing
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fastapi_stream import StreamRouter
from tests.asyncapi.checks import assert_valid


class Order(BaseModel):
    id: int


def router_for(url: str, **options: object) -> StreamRouter:
    router = StreamRouter(url, **options)  # type: ignore[arg-type]

    @router.subscriber("orders")
    async def take(order: Order) -> None: ...

    return router


def _included_paths(app: FastAPI) -> list[str]:
    """Every route path of ``app``, those of included routers too."""
    return [context.path or "" for context in routing.iter_route_contexts(app.routes)]


def test_the_three_routes_exist_before_startup(memory_url: str) -> None:
    app = FastAPI()
    app.include_router(router_for(memory_url))
    client = TestClient(app)  # no `with`: the lifespan never runs
    page = client.get("/asyncapi")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    document = client.get("/asyncapi.json").json()
    assert_valid(document)
    response = client.get("/asyncapi.yaml")
    assert response.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(response.text) == document
    assert "orders" in page.text


def test_routes_appear_once_however_often_the_lifespan_runs(memory_url: str) -> None:
    app = FastAPI()
    app.include_router(router_for(memory_url))
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get("/asyncapi.json").status_code == 200
    docs = [p for p in _included_paths(app) if p.startswith("/asyncapi")]
    assert sorted(docs) == ["/asyncapi", "/asyncapi.json", "/asyncapi.yaml"]


def test_not_listed_in_openapi(memory_url: str) -> None:
    app = FastAPI()
    app.include_router(router_for(memory_url))
    assert not [p for p in app.openapi()["paths"] if "asyncapi" in p]


def test_prefixes_apply(memory_url: str) -> None:
    outer = APIRouter(prefix="/api")
    outer.include_router(router_for(memory_url, prefix="/events"), prefix="/v1")
    app = FastAPI()
    app.include_router(outer)
    client = TestClient(app)
    assert client.get("/api/v1/events/asyncapi.json").status_code == 200
    assert client.get("/asyncapi.json").status_code == 404
    page = client.get("/api/v1/events/asyncapi").text
    assert 'href="asyncapi.json"' in page  # relative: right under any prefix


def test_schema_url_moves_or_removes_the_routes(memory_url: str) -> None:
    app = FastAPI()
    app.include_router(router_for(memory_url + "-a", schema_url="/docs/events"))
    client = TestClient(app)
    assert client.get("/docs/events").status_code == 200
    assert client.get("/docs/events.yaml").status_code == 200
    assert client.get("/asyncapi").status_code == 404
    app = FastAPI()
    app.include_router(router_for(memory_url + "-b", schema_url=None))
    assert TestClient(app).get("/asyncapi").status_code == 404


def test_guarded_by_dependencies(memory_url: str) -> None:
    def require_token(x_token: str | None = Header(None)) -> None:
        if x_token != "letmein":
            raise HTTPException(status_code=401)

    app = FastAPI()
    app.include_router(router_for(memory_url), dependencies=[Depends(require_token)])
    client = TestClient(app)
    for path in ("/asyncapi", "/asyncapi.json", "/asyncapi.yaml"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"x-token": "letmein"}).status_code == 200


def test_every_docs_route_shows_every_broker(memory_url: str) -> None:
    first = router_for(memory_url + "-a", prefix="/a")
    second = StreamRouter(memory_url + "-b", prefix="/b")

    @second.subscriber("payments")
    async def pay(amount: float) -> None: ...

    app = FastAPI()
    app.include_router(first)
    app.include_router(second)
    client = TestClient(app)
    for prefix in ("/a", "/b"):
        document = client.get(f"{prefix}/asyncapi.json").json()
        assert {c["address"] for c in document["channels"].values()} == {"orders", "payments"}
        assert len(document["servers"]) == 2


def test_the_page_links_to_swagger_and_is_locked_down(memory_url: str) -> None:
    app = FastAPI()
    app.include_router(router_for(memory_url + "-a"))
    response = TestClient(app, root_path="/svc").get("/asyncapi")
    assert 'href="/svc/docs"' in response.text
    assert "script-src" not in response.headers["content-security-policy"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    app = FastAPI(docs_url=None)
    app.include_router(router_for(memory_url + "-b"))
    assert "Swagger" not in TestClient(app).get("/asyncapi").text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_no_endpoint_publishes_from_the_docs(memory_url: str, method: str) -> None:
    app = FastAPI()
    app.include_router(router_for(memory_url))
    client = TestClient(app)
    for path in ("/asyncapi", "/asyncapi/try", "/asyncapi.json"):
        assert client.request(method, path, json={"sendToRealBroker": True}).status_code in (
            404,
            405,
        )


def test_a_mounted_router_documents_itself(memory_url: str) -> None:
    app = FastAPI()
    app.mount("/events", router_for(memory_url))
    document = TestClient(app).get("/events/asyncapi.json").json()
    assert [c["address"] for c in document["channels"].values()] == ["orders"]


def test_an_empty_schema_url_is_refused(memory_url: str) -> None:
    from fastapi_stream import ConfigurationError

    with pytest.raises(ConfigurationError, match="schema_url"):
        StreamRouter(memory_url, schema_url="/")
