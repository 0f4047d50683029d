"""examples/delivery/app.py: ack policies, retries, dead letters and graceful shutdown."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

import anyio
import pytest

from examples.delivery import app as example
from fastapi_stream import PayloadError, Settlement, StreamMessage
from fastapi_stream.testing import TestStreamBroker


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    def clear() -> None:
        example.gateway.failures = 0
        example.gateway.charged.clear()
        example.parked.clear()
        example.samples.clear()
        example.invoices.clear()
        example.reports.clear()

    clear()
    yield
    clear()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_a_failing_handler_is_retried_until_it_succeeds() -> None:
    example.gateway.failures = 2
    async with TestStreamBroker(example.router) as broker:
        await broker.publish({"id": 1, "amount": 5}, "delivery.payments")
        assert example.charge.mock.call_count == 3
    assert example.gateway.charged == [1]
    assert example.parked == []


@pytest.mark.anyio
async def test_after_the_last_attempt_the_message_is_dead_lettered() -> None:
    example.gateway.failures = 10
    async with TestStreamBroker(example.router) as broker:
        # The test broker raises the handler's error at the publish that caused it.
        with pytest.raises(example.GatewayDown):
            await broker.publish({"id": 2, "amount": 5}, "delivery.payments")
        assert example.charge.mock.call_count == 4
    (dead,) = example.parked
    assert json.loads(dead["body"]) == {"id": 2, "amount": 5}
    assert dead["reason"] == "GatewayDown: payment gateway unavailable"
    assert dead["channel"] == "delivery.payments"
    assert dead["attempts"] == 4


@pytest.mark.anyio
async def test_an_invalid_body_is_rejected_once_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestStreamBroker(example.router) as broker:
        with pytest.raises(PayloadError, match=r"body\.amount"):
            await broker.publish({"id": 3, "amount": -1}, "delivery.payments")
        assert example.charge.mock.call_count == 1  # delivered once, never retried
    rejected = [r for r in caplog.records if "rejected message" in r.getMessage()]
    assert len(rejected) == 1
    assert rejected[0].levelno == logging.ERROR
    assert "body.amount: Input should be greater than 0" in rejected[0].getMessage()
    (dead,) = example.parked
    assert dead["attempts"] == 1
    assert "body.amount" in dead["reason"]
    assert example.gateway.charged == []


@pytest.mark.anyio
async def test_backoff_is_waited_on_a_real_broker() -> None:
    # with_real=True keeps the router's own broker (here the process's memory broker),
    # so redeliveries wait for their backoff as they would in production.
    example.gateway.failures = 1
    async with TestStreamBroker(example.router, with_real=True) as broker:
        started = time.monotonic()
        await broker.publish({"id": 4, "amount": 5}, "delivery.payments")
        await wait_until(lambda: example.gateway.charged == [4])
        assert time.monotonic() - started >= 0.5 * 0.9  # first backoff, less jitter
    assert example.parked == []


@pytest.mark.anyio
async def test_ack_first_handler_receives_fields() -> None:
    async with TestStreamBroker(example.router) as broker:
        await broker.publish({"name": "cpu", "value": 0.5}, "delivery.metrics")
    assert example.samples == [("cpu", 0.5)]


@pytest.mark.anyio
async def test_manual_handler_settles_the_message_itself() -> None:
    # A handler is still the plain function: call it to look at what it decided.
    small = StreamMessage(b"", channel="delivery.invoices")
    await example.send_invoice(example.Payment(id=5, amount=20), small)
    assert small.settlement is Settlement.ACK

    huge = StreamMessage(b"", channel="delivery.invoices")
    await example.send_invoice(example.Payment(id=6, amount=20_000), huge)
    assert huge.settlement is Settlement.REJECT
    assert example.invoices == [5]

    async with TestStreamBroker(example.router) as broker:
        await broker.publish({"id": 7, "amount": 20_000}, "delivery.invoices")
        await broker.publish({"id": 8, "amount": 30}, "delivery.invoices")
    assert example.invoices == [5, 8]


@pytest.mark.anyio
async def test_shutdown_lets_running_handlers_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(example, "report_seconds", 0.2)
    async with TestStreamBroker(example.router, with_real=True) as broker:
        await broker.publish(9, "delivery.reports")
        await anyio.sleep(0.05)  # the handler is now running
    # Leaving the block closed the broker, which waited for the handler.
    assert example.reports == [9]


@pytest.mark.anyio
async def test_shutdown_cancels_handlers_after_the_graceful_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(example, "report_seconds", 30.0)
    monkeypatch.setattr(example.router.broker, "graceful_timeout", 0.1)
    async with TestStreamBroker(example.router, with_real=True) as broker:
        await broker.publish(10, "delivery.reports")
        await anyio.sleep(0.05)
    assert example.reports == []
    assert any("graceful timeout were cancelled" in r.getMessage() for r in caplog.records)
