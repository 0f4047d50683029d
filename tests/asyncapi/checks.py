"""Shared assertions: a document is valid AsyncAPI, checked against the official JSON
Schema of its version (``@asyncapi/specs``, installed by npm in ``make install``), against
the official schemas of its bindings, and for dangling ``$ref``; and what the official
parser (``@asyncapi/parser``) says about it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from fastapi_stream.asyncapi import validate

_PARSE = Path(__file__).with_name("parse.cjs")
#: The parser's rules about the app's own metadata (its id, contact, license, tags,
#: description): warnings the app's author settles, see docs/asyncapi.md.
METADATA_RULES = frozenset(
    {
        "asyncapi-id",
        "asyncapi2-tags",
        "asyncapi-info-contact",
        "asyncapi-info-contact-properties",
        "asyncapi-info-license",
        "asyncapi-info-description",
    }
)


def assert_valid(document: dict[str, Any]) -> dict[str, Any]:
    problems = validate(document)
    assert problems == [], "\n".join(problems)
    return document


def parser_diagnostics(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The errors (severity 0) and warnings (1) of ``@asyncapi/parser`` on ``document``."""
    return parse_all([document])[0]


def parse_all(documents: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """:func:`parser_diagnostics` of several documents, in one run of node."""
    node = shutil.which("node")
    assert node is not None, "node is needed to run @asyncapi/parser (make install)"
    done = subprocess.run(
        [node, str(_PARSE)],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],  # where node_modules is
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [[d for d in found if d["severity"] <= 1] for found in json.loads(done.stdout)]
