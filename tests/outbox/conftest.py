"""Fixtures of the outbox tests: a PostgreSQL database of each test's own (made on the
server at 127.0.0.1:5432 and dropped afterwards), the same on MariaDB (127.0.0.1:3306),
an SQLite file, a private Redis.

A test marked ``postgres`` or ``mariadb`` fails when the server cannot be reached and
started (never skips), as the real-broker tests do; servers are started with the
commands of the machine's notes when down.
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.faults import instances

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
_pg_problem: list[str | None] = []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _reachable() -> str | None:
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _ensure_postgres() -> str | None:
    """``None`` once PostgreSQL answers (started as DESIGN.md says when it is down)."""
    if _pg_problem:
        return _pg_problem[0]
    problem = _reachable()
    if problem is not None:
        versions = [Path(p).name for p in glob.glob("/etc/postgresql/*")]
        if versions and os.geteuid() == 0:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            problem = _reachable()
    _pg_problem.append(problem)
    return problem


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The asyncpg URL of a new database, dropped after the test."""
    problem = _ensure_postgres()
    if problem is not None:
        pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is needed and unreachable: {problem}")
    name = f"fs_outbox_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


MARIADBD = "/usr/sbin/mariadbd"
MARIADB_ADMIN = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


async def _mariadb(statement: str) -> None:
    import asyncmy

    conn = await asyncmy.connect(**MARIADB_ADMIN, connect_timeout=5)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
    finally:
        await conn.ensure_closed()


def _create_mariadb_database(name: str) -> str | None:
    """``None`` once the database exists (MariaDB started when it is down)."""
    try:
        asyncio.run(_mariadb(f"CREATE DATABASE `{name}`"))
        return None
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if os.geteuid() != 0 or not os.path.exists(MARIADBD):
        return problem
    subprocess.run(
        [*("start-stop-daemon", "--start", "--oknodo"), "--background", "--exec", MARIADBD],
        capture_output=True,
        timeout=30,
        check=False,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            asyncio.run(_mariadb(f"CREATE DATABASE `{name}`"))
            return None
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
    return problem


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """The aiomysql URL of a new MariaDB database, dropped after the test."""
    name = f"fs_outbox_{uuid.uuid4().hex[:12]}"
    problem = _create_mariadb_database(name)
    if problem is not None:
        pytest.fail(f"MariaDB at 127.0.0.1:3306 is needed and unreachable: {problem}")
    try:
        yield f"mysql+asyncmy://root@127.0.0.1:3306/{name}"
    finally:
        asyncio.run(_mariadb(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test with this fixture runs on SQLite, PostgreSQL and MariaDB."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    if request.param == "mariadb":
        return str(request.getfixturevalue("mariadb_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


class PrivateRedis(instances.Redis):
    """A redis-server of these tests' own on port 6397, killed by PID."""

    name = "redis-outbox"
    port = 6397


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    try:
        redis.start()
        yield redis
    finally:
        redis.close()
