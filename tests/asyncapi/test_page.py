"""The docs page: rendered on the server, readable, offline, and every string escaped."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from fastapi_stream import StreamRouter

XSS = "</script><script>alert(1)</script>"
TAG = '<img src=x onerror="alert(2)">'


class Note(BaseModel):
    text: str = Field(description=XSS, examples=[TAG])


class Order(BaseModel):
    """An order."""

    id: int
    notes: list[Note] = []
    shipping: dict[str, str] | None = None


def page_for(url: str) -> str:
    router = StreamRouter(url, description=TAG)

    @router.subscriber("orders.{region}", title=TAG)
    @router.publisher("receipts", description=XSS)
    async def take(order: Order, region: str) -> Order:
        """Takes orders </script><script>alert(1)</script>"""
        return order

    app = FastAPI(title=f"Shop {XSS}", description=TAG, version=XSS)
    app.include_router(router)
    return TestClient(app).get("/asyncapi").text


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "href" and value:
                self.hrefs.append(value)
            if name == "id" and value:
                self.ids.add(value)
            if name.startswith("on"):
                self.handlers.append(name)


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    return collector


def test_no_string_from_the_document_becomes_markup(memory_url: str) -> None:
    page = page_for(memory_url)
    parsed = parse(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert parsed.handlers == []
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert not re.search(r"<script", page, re.IGNORECASE)


def test_nothing_loads_from_elsewhere(memory_url: str) -> None:
    page = page_for(memory_url)
    parsed = parse(page)
    assert not {"script", "link", "iframe", "img"} & set(parsed.tags)
    assert not [h for h in parsed.hrefs if "://" in h]


def test_channels_operations_and_payload_fields_are_shown(memory_url: str) -> None:
    page = page_for(memory_url)
    for text in ("orders.{region}", "receipts", "RECEIVE", "SEND", "notes", "shipping", "region"):
        assert text in page
    assert "<td>&lt;img src=x" in page  # the server's description, escaped
    # nested models are linked tables; every link lands on an anchor of the page
    parsed = parse(page)
    local = [h[1:] for h in parsed.hrefs if h.startswith("#")]
    assert {"schema-Order", "schema-Note"} <= set(local)
    assert set(local) <= parsed.ids
    assert "map of string" in page and "array of" in page
    # each operation shows its message (its channel's, when the operation names none)
    assert page.count("<h4>Message: ") == 2 and page.count("<h4>Reply: ") == 1
