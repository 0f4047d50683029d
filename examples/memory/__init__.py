"""Memory example: see docs/memory.md."""
