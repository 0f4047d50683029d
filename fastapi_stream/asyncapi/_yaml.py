"""A YAML writer for JSON data, so ``/asyncapi.yaml`` needs no YAML library.

Block style for mappings and lists; every string is a double-quoted JSON string (valid
YAML, no escaping rules of its own), so nothing a description holds can change the
structure.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["dump"]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


def dump(data: Any) -> str:
    lines: list[str] = []
    if _is_block(data):
        _emit(data, 0, lines)
    else:
        lines.append(_scalar(data))
    return "\n".join(lines) + "\n"


def _is_block(value: Any) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):  # empty
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)  # null, true/false, numbers, "strings"


def _key(key: Any) -> str:
    text = str(key)
    if _PLAIN_KEY.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)


def _emit(node: Any, indent: int, out: list[str]) -> None:
    pad = " " * indent
    if isinstance(node, dict):
        for key, value in node.items():
            if _is_block(value):
                out.append(f"{pad}{_key(key)}:")
                _emit(value, indent + 2, out)
            else:
                out.append(f"{pad}{_key(key)}: {_scalar(value)}")
        return
    for item in node:
        if _is_block(item):
            nested: list[str] = []
            _emit(item, indent + 2, nested)
            out.append(f"{pad}- {nested[0][indent + 2 :]}")
            out.extend(nested[1:])
        else:
            out.append(f"{pad}- {_scalar(item)}")
