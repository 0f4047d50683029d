"""Handlers example: see docs/handlers.md."""
