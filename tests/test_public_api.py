"""The public API is what ``__all__`` says, sorted and complete."""

from __future__ import annotations

import importlib
import importlib.resources

import pytest

import fastapi_stream

MODULES = [
    "fastapi_stream",
    "fastapi_stream.testing",
    "fastapi_stream.memory",
    "fastapi_stream.kafka",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__)
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.{public} is listed but missing"


def test_every_public_name_is_listed() -> None:
    public = {
        name
        for name, value in vars(fastapi_stream).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("fastapi_stream")
    }
    assert public <= set(fastapi_stream.__all__)


def test_the_package_is_typed() -> None:
    assert (importlib.resources.files("fastapi_stream") / "py.typed").is_file()
