"""Testing helpers: :class:`TestStreamBroker` runs handlers in memory."""

from fastapi_stream.testing.broker import TestStreamBroker

__all__ = ["TestStreamBroker"]
