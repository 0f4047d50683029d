"""The broker-agnostic core: message, transport seam, call plans, subscriber, publisher.

These modules are internal; applications import from :mod:`fastapi_stream`.
"""
