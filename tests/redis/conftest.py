"""Helpers for the Redis tests: unique names, a raw client, and waits that are bounded."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_stream.redis import RedisRouter
from tests.waiting import eventually  # noqa: F401 - used by this folder's tests

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def raw(uid: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client; deletes the test's keys (``test.<uid>...``) afterwards."""
    client = aioredis.Redis.from_url(URL)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"test.{uid}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def router(uid: str, **options: Any) -> RedisRouter:
    """A router whose connections ``CLIENT LIST`` shows under the test's own name."""
    options.setdefault("min_idle_time", 1.0)
    return RedisRouter(URL, client_name=f"fs-test-{uid}", **options)


async def client_ids(raw: aioredis.Redis, name: str) -> list[str]:
    """Ids of the connections named ``name`` (the test's own, never anyone else's)."""
    return [c["id"] for c in await raw.client_list() if c.get("name") == name]
