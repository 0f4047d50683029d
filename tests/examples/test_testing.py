"""examples/testing/: the documented test functions run here as this suite's own tests.

pytest collects the imported ``test_*`` functions and the autouse fixture, so they run
exactly as they would in an application's test suite.
"""

from __future__ import annotations

from examples.testing.conftest import anyio_backend
from examples.testing.test_app import (
    empty_audit_log,
    test_against_the_real_broker,
    test_an_invalid_order_is_rejected,
    test_create_order,
    test_currency_can_be_overridden,
    test_currency_can_be_overridden_without_test_client,
    test_validate_passes_the_order_on,
)

__all__ = [
    "anyio_backend",
    "empty_audit_log",
    "test_against_the_real_broker",
    "test_an_invalid_order_is_rejected",
    "test_create_order",
    "test_currency_can_be_overridden",
    "test_currency_can_be_overridden_without_test_client",
    "test_validate_passes_the_order_on",
]


def test_every_documented_test_is_collected_here() -> None:
    from examples.testing import test_app

    documented = {name for name in vars(test_app) if name.startswith("test_")}
    assert documented <= set(__all__)
