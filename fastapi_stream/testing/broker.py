"""``TestStreamBroker``: run a router's handlers in memory, with no broker around.

It swaps the broker's transport for an inline memory engine for the duration of the
block; everything above the transport (decoding, validation, dependencies, middlewares,
ack policy, publishing results) is the production pipeline. ``await publish(...)``
returns once the handlers it triggered, and the handlers of what they published, ran;
a handler's exception is raised at the ``publish`` that caused it.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi_stream.core.broker import StreamBroker
from fastapi_stream.core.transport import Transport
from fastapi_stream.memory.engine import MemoryEngine
from fastapi_stream.memory.transport import MemoryTransport
from fastapi_stream.router import StreamRouter

__all__ = ["StreamTestWarning", "TestStreamBroker"]


class StreamTestWarning(UserWarning):
    """A test broker runs in a way that likely differs from the app under test."""


_SYNC_TIMEOUT = 30.0


class TestStreamBroker:
    """Test a :class:`StreamRouter` (or a :class:`StreamBroker`) without a real broker.

    Use it as ``async with`` (the broker starts inside the block, no app needed) or as
    ``with`` next to FastAPI's ``TestClient``, entered before or after it. With
    ``app=app``, ``async with`` also runs the app's lifespan, so its state and its
    ``dependency_overrides`` apply to the handlers as they do under ``TestClient``. With
    ``with_real=True`` the real broker is used and only the mocks are switched on, so
    the same test runs against the real thing (wait with ``await handler.wait_call()``).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        target: StreamRouter | StreamBroker,
        *,
        with_real: bool = False,
        app: Any = None,
    ) -> None:
        self.broker = target.broker if isinstance(target, StreamRouter) else target
        self.with_real = with_real
        self.app = app
        self._router = target if isinstance(target, StreamRouter) else None
        self._replaced: Transport | None = None
        self._owns_start = False
        self._lifespan: AbstractAsyncContextManager[Any] | None = None
        self._provider: Any = None

    # -- async use ---------------------------------------------------------------------

    async def __aenter__(self) -> StreamBroker:
        await self._enter()
        self._provider = self.broker.dependency_overrides_provider
        if self.app is not None:
            # The app's lifespan, as a server runs it: its state, and the router's
            # lifespan, which starts the broker and lets handlers see the app's
            # dependency_overrides.
            self._lifespan = self.app.router.lifespan_context(self.app)
            state = await self._lifespan.__aenter__()
            for key, value in (state or {}).items():
                setattr(self.broker.state, key, value)
            self.broker.dependency_overrides_provider = self.app
        else:
            self._warn_if_overrides_unseen()
        if not self.broker.started:
            await self.broker.start()
            self._owns_start = True
        return self.broker

    async def __aexit__(self, *exc_info: object) -> None:
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)
            self.broker.dependency_overrides_provider = self._provider
        if self._owns_start:
            await self.broker.close()
            self._owns_start = False
        await self._exit()

    def _warn_if_overrides_unseen(self) -> None:
        router = self._router
        if router is None or not router.included or self.broker.dependency_overrides_provider:
            return
        if any(s.plan.has_dependencies for s in self.broker.subscribers):
            warnings.warn(
                "TestStreamBroker runs handlers with dependencies, but without the app "
                "their router was included in: app.dependency_overrides and the app's "
                "lifespan do not apply. Pass the app, TestStreamBroker(router, app=app), "
                "or use it beside TestClient(app)",
                StreamTestWarning,
                stacklevel=3,
            )

    # -- sync use, beside TestClient ---------------------------------------------------

    def __enter__(self) -> StreamBroker:
        self._run(self._enter())
        return self.broker

    def __exit__(self, *exc_info: object) -> None:
        self._run(self._exit())

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run in the loop the broker lives in: TestClient's, when its app is running."""
        loop = self.broker.loop
        if self.broker.started and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(coroutine, loop).result(_SYNC_TIMEOUT)
        else:
            asyncio.run(coroutine)

    # -- the swap ----------------------------------------------------------------------

    async def _enter(self) -> None:
        broker = self.broker
        broker.testing = True
        if not self.with_real:
            broker.raise_errors = True
            # The real transport's routing rules, so messages land where they would.
            engine = MemoryEngine(inline=True, routing=broker.transport.routing())
            inline = MemoryTransport(engine)
            inline.publish_options = broker.transport.publish_options  # refused alike
            self._replaced = await broker.replace_transport(inline)

    async def _exit(self) -> None:
        broker = self.broker
        if self._replaced is not None:
            await broker.replace_transport(self._replaced)
            self._replaced = None
        broker.testing = False
        broker.raise_errors = False
        for subscriber in broker.subscribers:
            subscriber.endpoint.reset()
        for publisher in broker.publishers:
            publisher.reset()
