"""The README's code excerpts and the docs' snippets stay true to ``examples/``.

A Python block in README.md is preceded by ``<!-- excerpt: path -->``; split at
``# ...`` lines, each piece must appear verbatim in that file (snippet markers removed,
blank lines around the piece ignored).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXCERPT = re.compile(r"<!-- excerpt: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)
SNIPPET_MARKER = re.compile(r"^[ \t]*# --8<-- \[(start|end):[\w-]+\]\n", re.M)


def excerpts() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    return [(m["path"], m["code"]) for m in EXCERPT.finditer(readme)]


def test_every_python_block_of_the_readme_is_an_excerpt() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(excerpts()) == readme.count("```python") == 2


@pytest.mark.parametrize(("path", "code"), excerpts(), ids=lambda value: str(value)[:30])
def test_readme_excerpt_matches_its_example(path: str, code: str) -> None:
    source = SNIPPET_MARKER.sub("", (ROOT / path).read_text())
    for piece in re.split(r"^# \.\.\.\n", code, flags=re.M):
        piece = piece.strip("\n")
        assert piece, "empty piece between '# ...' lines"
        assert piece in source, f"README excerpt not found in {path}:\n{piece}"


def test_every_example_has_a_test_and_a_docs_page() -> None:
    docs = "\n".join(page.read_text() for page in (ROOT / "docs").glob("*.md"))
    for folder in sorted(p for p in (ROOT / "examples").iterdir() if (p / "__init__.py").exists()):
        assert (ROOT / "tests" / "examples" / f"test_{folder.name}.py").exists(), folder
        assert f'--8<-- "examples/{folder.name}/' in docs, folder
