"""Housekeeping on aiokafka's clients on the way out (``kafka/records.py``): bounded, and
a failure half-way still closes the connections."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_stream.kafka.records import quietly, stop_client

pytestmark = pytest.mark.anyio


class _Connections:
    closed = False

    async def close(self) -> None:
        self.closed = True


class _Client:
    """Stops as aiokafka's consumer does when a fetch is pending: it cancels the fetch
    task and awaits it, so ``CancelledError`` comes out of ``stop()`` (aio-libs/aiokafka
    #647) although nobody cancelled the caller. ``hang`` stops forever instead."""

    def __init__(self, *, hang: bool = False) -> None:
        self._client = _Connections()
        self.hang = hang

    async def stop(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        fetch = asyncio.ensure_future(asyncio.sleep(60))
        await asyncio.sleep(0)
        fetch.cancel()
        await fetch


async def test_a_stray_cancellation_out_of_stop_is_a_failure_and_the_connections_close() -> None:
    client = _Client()
    await stop_client(client)
    assert client._client.closed
    await quietly(client.stop())  # and housekeeping goes on past it


async def test_cancelling_the_caller_still_cancels_it() -> None:
    client = _Client(hang=True)
    stopping = asyncio.create_task(stop_client(client))
    await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert not client._client.closed
