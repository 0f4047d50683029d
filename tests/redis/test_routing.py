"""``RedisRouting`` matches Redis's glob patterns exactly: each pattern is checked
against the same names with ``SCAN MATCH``, which uses the matcher PSUBSCRIBE uses."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from fastapi_stream.redis.routing import glob_to_regex

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NAMES = ["a", "b", "ab", "abc", "a.b", "a.b.c", "x*y", "x?y", "xzy", "[x]", "a-z", "m", "A"]
PATTERNS = [
    "*",
    "a*",
    "a?",
    "a.*",
    "?b*",
    "[ab]",
    "[^a]",
    "[a-c]*",
    "[c-a]",
    "x\\*y",
    "x?y",
    "\\[x\\]",
    "a[-]z",
    "*.*.*",
    "[A-Z]",
]


async def test_globs_match_like_redis(uid: str, raw: aioredis.Redis) -> None:
    prefix = f"test.{uid}."
    await raw.mset({prefix + name: 1 for name in NAMES})
    for pattern in PATTERNS:
        found = {
            key.decode()[len(prefix) :]
            async for key in raw.scan_iter(match=prefix.replace(".", "[.]") + pattern, count=1000)
        }
        ours = {name for name in NAMES if glob_to_regex(pattern).match(name)}
        assert ours == found, pattern
