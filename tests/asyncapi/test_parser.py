"""The official parser, ``@asyncapi/parser``, on the documents of every example app: no
error, and no warning but those about the app's own metadata, which examples/asyncapi
fills in (and so has none at all)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_stream import StreamRouter
from fastapi_stream.asyncapi import get_asyncapi
from tests.asyncapi.checks import METADATA_RULES, parse_all, parser_diagnostics

EXAMPLES = [
    "asyncapi",
    "asyncapi.rabbit",
    "delivery",
    "handlers",
    "kafka",
    "memory",
    "nats",
    "observability",
    "quickstart",
    "rabbit",
    "redis",
]
VERSIONS = ["3.0.0", "2.6.0"]
# node and the parser take seconds per document on a busy machine
pytestmark = pytest.mark.timeout(180)


def example_app(name: str) -> Any:
    module = importlib.import_module(f"examples.{name}" if "." in name else f"examples.{name}.app")
    return module.app


@pytest.fixture(scope="module")
def diagnostics() -> dict[tuple[str, str], list[dict[str, Any]]]:
    """What the parser says about each example's documents (one node run: it is slow)."""
    keys = [(name, version) for name in EXAMPLES for version in VERSIONS]
    documents = [get_asyncapi(example_app(n), asyncapi_version=v) for n, v in keys]
    return dict(zip(keys, parse_all(documents), strict=True))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", EXAMPLES)
def test_no_error_and_no_warning_of_ours(
    diagnostics: dict[tuple[str, str], list[dict[str, Any]]], name: str, version: str
) -> None:
    ours = [d for d in diagnostics[name, version] if d["code"] not in METADATA_RULES]
    assert ours == []


@pytest.mark.parametrize("name", ["asyncapi", "asyncapi.rabbit"])
@pytest.mark.parametrize("version", VERSIONS)
def test_the_documented_examples_have_no_warning_at_all(
    diagnostics: dict[tuple[str, str], list[dict[str, Any]]], name: str, version: str
) -> None:
    assert diagnostics[name, version] == []


def test_metadata_warnings_go_once_the_app_says_who_it_is(memory_url: str) -> None:
    router = StreamRouter(memory_url)

    @router.subscriber("orders")
    async def take(order: dict[str, int]) -> None: ...

    bare = FastAPI()
    bare.include_router(router)
    codes = {d["code"] for d in parser_diagnostics(get_asyncapi(bare, asyncapi_version="2.6.0"))}
    assert codes == METADATA_RULES - {"asyncapi-info-contact-properties"}
    app = FastAPI(
        title="Orders",
        description="Takes orders.",
        contact={"name": "Ops", "url": "https://ops.example.com", "email": "ops@example.com"},
        license_info={"name": "MIT"},
        openapi_tags=[{"name": "orders"}],
    )
    app.state.asyncapi_id = "urn:example:orders"
    app.include_router(router)
    document = get_asyncapi(app, asyncapi_version="2.6.0")
    assert document["id"] == "urn:example:orders"
    assert parser_diagnostics(document) == []
    assert "id" not in get_asyncapi(app)  # AsyncAPI 3.0.0 has no id
