"""Delivery example: see docs/delivery.md."""
