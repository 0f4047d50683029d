"""A real browser renders the docs page from a real server, with no internet.

Needs Debian's ``chromium``, which ``make install`` installs when run as root; without it
the test fails rather than skips.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_stream import StreamRouter

ATTACK = (
    "</script><script>document.title='pwned'</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned', '1')\">"
)


class Parcel(BaseModel):
    tracking_number: str
    weight_kg: float


def make_app() -> FastAPI:
    router = StreamRouter("memory://browser")

    @router.subscriber("parcels.{depot}")
    async def route_parcel(parcel: Parcel, depot: str) -> None:
        """Routes parcels."""

    app = FastAPI(title="Depot", description=ATTACK)
    app.include_router(router)
    return app


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:  # `make install` installs it where it can (as root)
        pytest.fail("this test needs Debian's chromium: apt-get install chromium", pytrace=False)
    return found


@pytest.fixture
def server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        make_app(), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


@pytest.mark.timeout(90)
def test_chromium_renders_the_page_offline(server: str) -> None:
    browser = chromium()
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            # No internet: every name but the loopback server fails to resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=3000",
            "--dump-dom",
            f"{server}/asyncapi",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("parcels.{depot}", "tracking_number", "weight_kg", "Routes parcels."):
        assert text in dom
    assert "<title>Depot - AsyncAPI</title>" in dom  # no script changed it
    assert "<body>" in dom  # the onerror handler did not run either
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert "<script" not in dom
