"""The in-process memory broker (``memory://``), the embedded default."""

from fastapi_stream.memory.engine import MemoryEngine
from fastapi_stream.memory.transport import MemoryTransport

__all__ = ["MemoryEngine", "MemoryTransport"]
