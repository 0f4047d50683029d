"""The object ``@router.subscriber`` and ``@router.publisher`` return: the user's function,
still callable as before, plus what tests need (``.mock`` and ``wait_call()``)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeAlias, TypeVar

from fastapi_stream.core import codec

if TYPE_CHECKING:
    from unittest.mock import MagicMock

    from fastapi_stream.core.publisher import Publisher
    from fastapi_stream.core.subscriber import Subscriber

__all__ = ["Call", "CallRecorder", "Endpoint"]

P = ParamSpec("P")
R = TypeVar("R")

#: What a test broker records of a handled or published message: its body and content
#: type (decoded only when a test reads the mock), or a list of them for a batch.
Call: TypeAlias = tuple[bytes, str | None] | list[tuple[bytes, str | None]]


def _decoded(body: bytes, content_type: str | None) -> Any:
    """The body as a test mock shows it: decoded, or the bytes if they do not decode."""
    try:
        return codec.decode(body, content_type)
    except ValueError:
        return body


class CallRecorder:
    """A ``MagicMock`` fed lazily: calls wait as raw bodies and are replayed into the mock
    when a test reads it, so a test broker spends nothing on decoding and mock bookkeeping
    until someone looks (a ``MagicMock`` call costs more than the whole pipeline).

    A waiting call is a tuple of bytes and a string, which the garbage collector does not
    track: a test that publishes many messages does not make every collection slower."""

    __slots__ = ("_mock", "_name", "_pending")

    def __init__(self, name: str) -> None:
        self._name = name
        self._mock: MagicMock | None = None  # made when first read: unittest is slow to import
        self._pending: list[Call] = []

    def record(self, call: Call) -> None:
        self._pending.append(call)

    @property
    def mock(self) -> MagicMock:
        if self._mock is None:
            from unittest.mock import MagicMock

            self._mock = MagicMock(name=self._name)
        if self._pending:
            pending, self._pending = self._pending, []
            for call in pending:
                if isinstance(call, tuple):
                    self._mock(_decoded(*call))
                else:
                    self._mock([_decoded(*item) for item in call])
        return self._mock

    def reset(self) -> None:
        self._pending.clear()
        if self._mock is not None:
            self._mock.reset_mock()


class Endpoint(Generic[P, R]):
    """A message handler as registered: call it like the original function.

    ``mock`` records the decoded body of every message the handler received while a
    :class:`~fastapi_stream.testing.TestStreamBroker` is active; ``await wait_call()``
    waits until the handler has processed a message.
    """

    def __init__(self, func: Callable[P, R]) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.publishers: list[Publisher] = []
        self.subscribers: list[Subscriber] = []
        self._recorder = CallRecorder(getattr(func, "__name__", "handler"))
        self._calls = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Endpoint {getattr(self.func, '__qualname__', self.func)!r}>"

    @property
    def mock(self) -> MagicMock:
        """Called with the decoded body of each message handled under a test broker."""
        return self._recorder.mock

    def record_call(self, call: Call | None = None) -> None:
        """Called by the subscriber after each processed message; under a test broker
        with the body (or bodies) that ``mock`` shows decoded."""
        self._calls += 1
        if call is not None:
            self._recorder.record(call)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for count, waiter in waiters:
                if waiter.done():
                    continue
                if self._calls >= count:
                    waiter.set_result(None)
                else:
                    self._waiters.append((count, waiter))

    def reset(self) -> None:
        """Forget recorded calls (done when a test broker exits)."""
        self._calls = 0
        self._recorder.reset()

    @property
    def call_count(self) -> int:
        """Messages processed since the last reset (the end of a test broker block)."""
        return self._calls

    async def wait_call(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Return once the handler has processed ``count`` messages since the last reset;
        raise ``TimeoutError`` after ``timeout`` seconds."""
        if self._calls >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, waiter)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)
