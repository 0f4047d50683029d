"""Testing helpers: :class:`TestStreamBroker` runs handlers in memory."""

from fastapi_stream.testing.broker import StreamTestWarning, TestStreamBroker

__all__ = ["StreamTestWarning", "TestStreamBroker"]
