"""Validation against the official AsyncAPI schemas can fail, and says why."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_stream import StreamRouter
from fastapi_stream.asyncapi import get_asyncapi, validate


@pytest.fixture
def document(memory_url: str) -> dict[str, Any]:
    router = StreamRouter(memory_url)

    @router.subscriber("orders")
    async def take(order_id: int) -> int:
        return order_id

    app = FastAPI()
    app.include_router(router)
    return get_asyncapi(app)


def test_a_generated_document_is_valid(document: dict[str, Any]) -> None:
    assert validate(document) == []


def test_a_broken_document_is_rejected(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    del broken["info"]["title"]
    broken["operations"]["take"]["action"] = "consume"
    problems = validate(broken)
    assert any(p.startswith("info:") and "'title' is a required property" in p for p in problems)
    assert any(p.startswith("operations/take") and "consume" in p for p in problems)


def test_a_dangling_ref_is_rejected(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    broken["operations"]["take"]["channel"] = {"$ref": "#/channels/nowhere"}
    assert validate(broken) == [
        "operations/take/channel: $ref '#/channels/nowhere' points at nothing"
    ]


def test_a_2_6_document_is_checked_against_the_2_6_schema(document: dict[str, Any]) -> None:
    broken = {**document, "asyncapi": "2.6.0"}  # a 3.0 body under a 2.6 version
    assert validate(broken)


def test_an_unknown_version_is_reported() -> None:
    assert validate({"asyncapi": "1.2.0"}) == [
        "asyncapi: version '1.2.0' is not one of 3.0.0, 2.6.0"
    ]
