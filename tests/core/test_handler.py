"""Handler parameters follow FastAPI's rules; the call plan runs them per message."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Body, Cookie, Depends, FastAPI, Header, Path, Request
from pydantic import BaseModel, Field
from starlette.datastructures import State

from fastapi_stream import ConfigurationError, PayloadError, StreamBroker, StreamMessage
from fastapi_stream.core.handler import CallContext, CallPlan
from fastapi_stream.memory import MemoryTransport

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    id: int
    amount: float = Field(gt=0)


@dataclasses.dataclass
class Point:
    x: int
    y: int


def message(
    body: bytes,
    *,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    path: dict[str, str] | None = None,
) -> StreamMessage:
    msg = StreamMessage(body, channel="test", headers=headers, content_type=content_type)
    msg.path = path or {}
    return msg


def context(msg: StreamMessage, overrides: dict[Any, Any] | None = None) -> CallContext:
    broker = StreamBroker(MemoryTransport("memory://handler-tests"))
    broker.state.db = "the-db"
    return CallContext(
        message=msg,
        broker=broker,
        logger=logging.getLogger("handler-tests"),
        state=broker.state,
        overrides=overrides or {},
    )


async def run(handler: Any, msg: StreamMessage, **plan_options: Any) -> Any:
    plan = CallPlan(handler, **plan_options)
    return await plan.run(msg, context(msg))


# -- the body ----------------------------------------------------------------------------


async def test_one_model_receives_the_whole_body() -> None:
    async def handler(order: Order) -> Order:
        return order

    assert await run(handler, message(b'{"id": 1, "amount": 2.5}')) == Order(id=1, amount=2.5)


async def test_several_parameters_receive_fields_of_a_json_object() -> None:
    async def handler(name: str, count: int, tags: list[str]) -> tuple[str, int, list[str]]:
        return name, count, tags

    body = b'{"name": "a", "count": "3", "tags": ["x"]}'
    assert await run(handler, message(body)) == ("a", 3, ["x"])


async def test_embed_puts_a_single_model_under_its_name() -> None:
    async def handler(order: Annotated[Order, Body(embed=True)]) -> int:
        return order.id

    assert await run(handler, message(b'{"order": {"id": 7, "amount": 1}}')) == 7


async def test_scalars_lists_and_dataclasses_work_as_whole_bodies() -> None:
    async def text(value: str) -> str:
        return value

    async def numbers(values: list[int]) -> list[int]:
        return values

    async def point(p: Point) -> Point:
        return p

    assert await run(text, message(b"hello", content_type="text/plain")) == "hello"
    assert await run(numbers, message(b"[1, 2, 3]")) == [1, 2, 3]
    assert await run(point, message(b'{"x": 1, "y": 2}')) == Point(1, 2)


async def test_a_body_without_content_type_is_json_if_it_parses_else_text() -> None:
    async def handler(value: str) -> str:
        return value

    assert await run(handler, message(b'"quoted"', content_type=None)) == "quoted"
    assert await run(handler, message(b"plain words", content_type=None)) == "plain words"


async def test_a_custom_decoder_feeds_validation() -> None:
    async def handler(order: Order) -> Order:
        return order

    def decoder(body: bytes, content_type: str | None) -> Any:
        id_, amount = body.decode().split(",")
        return {"id": id_, "amount": amount}

    msg = message(b"4,1.5", content_type="text/csv")
    assert await run(handler, msg, decoder=decoder) == Order(id=4, amount=1.5)


async def test_an_optional_body_may_be_empty() -> None:
    async def handler(order: Order | None = None) -> Order | None:
        return order

    assert await run(handler, message(b"")) is None


async def test_invalid_fields_are_located_in_the_body_without_their_values() -> None:
    async def handler(order: Order) -> None:
        raise AssertionError("never called")

    with pytest.raises(PayloadError) as caught:
        await run(handler, message(b'{"id": "secret-value", "amount": -1}'))
    error = caught.value
    assert [e["loc"] for e in error.errors] == [("body", "id"), ("body", "amount")]
    assert "secret-value" not in str(error)
    assert "body.amount" in str(error)


async def test_broken_json_is_a_payload_error() -> None:
    async def handler(order: Order) -> None:
        raise AssertionError("never called")

    with pytest.raises(PayloadError, match="invalid message body"):
        await run(handler, message(b"{not json"))


# -- headers and path parameters ---------------------------------------------------------


async def test_headers_bind_by_alias_or_by_name() -> None:
    async def handler(x_tenant: str = Header(), x_trace: str = Header("none")) -> tuple[str, str]:
        return x_tenant, x_trace

    assert await run(handler, message(b"", headers={"x-tenant": "acme"})) == ("acme", "none")
    # FastAPI converts underscores; a broker header spelled with them binds too.
    assert await run(handler, message(b"", headers={"x_tenant": "a", "x_trace": "t"})) == (
        "a",
        "t",
    )


async def test_a_missing_header_is_a_payload_error_in_headers() -> None:
    async def handler(x_tenant: Annotated[int, Header()]) -> None:
        raise AssertionError("never called")

    with pytest.raises(PayloadError) as caught:
        await run(handler, message(b""))
    assert caught.value.errors[0]["loc"] == ("headers", "x-tenant")


async def test_path_parameters_come_from_the_channel_pattern() -> None:
    async def handler(level: str, code: Annotated[int, Path()], text: str) -> tuple[str, int, str]:
        return level, code, text

    msg = message(b'"disk full"', path={"level": "warn", "code": "507"})
    assert await run(handler, msg, path_params=("level", "code")) == ("warn", 507, "disk full")


# -- context by type ---------------------------------------------------------------------


async def test_context_values_are_injected_by_type() -> None:
    seen: dict[str, Any] = {}

    async def handler(
        msg: StreamMessage, logger: logging.Logger, broker: StreamBroker, state: State
    ) -> None:
        seen.update(msg=msg, logger=logger, broker=broker, db=state.db)

    msg = message(b"")
    await run(handler, msg)
    assert seen["msg"] is msg
    assert seen["logger"].name == "handler-tests"
    assert isinstance(seen["broker"], StreamBroker)
    assert seen["db"] == "the-db"


async def test_headers_named_like_context_change_nothing() -> None:
    async def handler(msg: StreamMessage, logger: logging.Logger) -> str:
        return logger.name

    msg = message(b"", headers={"logger": "x", "msg": "y", "context__": "z", "broker": "b"})
    assert await run(handler, msg) == "handler-tests"


# -- dependencies ------------------------------------------------------------------------


async def test_yield_dependencies_clean_up_after_the_handler() -> None:
    events: list[str] = []

    async def session() -> AsyncIterator[str]:
        events.append("open")
        yield "session"
        events.append("close")

    async def handler(s: str = Depends(session)) -> str:
        events.append(f"handle with {s}")
        return s

    assert await run(handler, message(b"")) == "session"
    assert events == ["open", "handle with session", "close"]


async def test_a_handler_error_reaches_the_yield_dependency() -> None:
    caught: list[BaseException] = []

    async def session() -> AsyncIterator[None]:
        try:
            yield
        except ValueError as exc:
            caught.append(exc)
            raise

    async def handler(_: None = Depends(session)) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await run(handler, message(b""))
    assert len(caught) == 1


async def test_sub_dependencies_are_solved_once_per_message() -> None:
    calls: list[str] = []

    def settings() -> dict[str, str]:  # sync: runs in a worker thread, as in FastAPI
        calls.append("settings")
        return {"region": "eu"}

    async def repo(cfg: dict[str, str] = Depends(settings)) -> str:
        return f"repo@{cfg['region']}"

    def sync_gen(cfg: dict[str, str] = Depends(settings)) -> Iterator[str]:
        yield cfg["region"]

    def handler(r: str = Depends(repo), region: str = Depends(sync_gen)) -> str:
        return f"{r}/{region}"

    assert await run(handler, message(b"")) == "repo@eu/eu"
    assert calls == ["settings"]


async def test_dependencies_receive_headers_body_fields_and_context() -> None:
    async def tenant(msg: StreamMessage, x_tenant: str = Header()) -> str:
        return f"{x_tenant}:{msg.channel}"

    async def handler(order: Order, who: str = Depends(tenant)) -> str:
        return f"{who}:{order.id}"

    msg = message(b'{"id": 3, "amount": 1}', headers={"x-tenant": "acme"})
    assert await run(handler, msg) == "acme:test:3"


async def test_extra_dependencies_run_before_the_handler() -> None:
    events: list[str] = []

    async def audit() -> None:
        events.append("audit")

    async def handler() -> None:
        events.append("handler")

    await run(handler, message(b""), dependencies=[Depends(audit)])
    assert events == ["audit", "handler"]


async def test_dependency_overrides_apply() -> None:
    def real() -> str:
        return "real"

    def fake(x_mode: str = Header("test")) -> str:
        return f"fake-{x_mode}"

    async def handler(value: str = Depends(real)) -> str:
        return value

    app = FastAPI()
    app.dependency_overrides[real] = fake
    msg = message(b"", headers={"x-mode": "on"})
    plan = CallPlan(handler)
    assert await plan.run(msg, context(msg, app.dependency_overrides)) == "fake-on"
    assert await plan.run(msg, context(msg)) == "real"


async def test_sync_handlers_work() -> None:
    def handler(order: Order) -> int:
        return order.id

    assert await run(handler, message(b'{"id": 9, "amount": 1}')) == 9


# -- what a message handler cannot declare ------------------------------------------------


def test_http_only_parameters_fail_at_registration() -> None:
    async def wants_request(request: Request) -> None: ...

    async def wants_cookie(session: str = Cookie()) -> None: ...

    with pytest.raises(ConfigurationError, match="StreamMessage"):
        CallPlan(wants_request)
    with pytest.raises(ConfigurationError, match="Cookie"):
        CallPlan(wants_cookie)
