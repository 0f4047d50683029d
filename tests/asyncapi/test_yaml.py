"""The YAML writer: what it writes reads back as the same data."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fastapi_stream.asyncapi._yaml import dump

CASES: list[Any] = [
    {"a": [[1, [2, {"b": "c\n: - #'\"", "yes": None}]], {}], "": [], "on": 1.5},
    {"$ref": "#/components/schemas/X", "k": {"x": [{"y": [True, False, 0]}]}},
    {"text": "</script>\u2028é - [x]: {y}", "null": "null", "n": "123"},
    [],
    "plain",
]


@pytest.mark.parametrize("data", CASES)
def test_round_trip(data: Any) -> None:
    assert yaml.safe_load(dump(data)) == data


def test_block_style() -> None:
    assert dump({"info": {"title": "Shop"}, "tags": ["a"]}) == (
        'info:\n  title: "Shop"\ntags:\n  - "a"\n'
    )
