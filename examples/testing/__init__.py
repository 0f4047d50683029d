"""Testing example: see docs/testing.md."""
