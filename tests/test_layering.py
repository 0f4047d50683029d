"""The core stays broker-free: no broker client and no broker subpackage is imported by
the core, the router, health, asyncapi or testing (testing may use the memory broker)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastapi_stream"
CLIENTS = {"aiokafka", "aio_pika", "aiormq", "nats", "redis", "aiomqtt", "paho", "confluent_kafka"}
BROKER_PACKAGES = {
    f"fastapi_stream.{name}" for name in ("kafka", "rabbit", "nats", "redis", "mqtt")
}
BROKER_FREE = ["core", "asyncapi", "observability", "router.py", "health.py", "testing", "cli.py"]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def broker_free_files() -> list[Path]:
    files: list[Path] = []
    for entry in BROKER_FREE:
        target = PACKAGE / entry
        files.extend(
            sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else []
        )
    return files


@pytest.mark.parametrize("path", broker_free_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_broker_imports(path: Path) -> None:
    offending = {
        name
        for name in imported_modules(path)
        if name.split(".")[0] in CLIENTS or any(name.startswith(p) for p in BROKER_PACKAGES)
    }
    if path.relative_to(PACKAGE).parts[0] != "testing":
        offending |= {n for n in imported_modules(path) if n.startswith("fastapi_stream.memory")}
    assert not offending, f"{path.name} imports {sorted(offending)}"


def test_importing_the_package_loads_no_broker_client() -> None:
    code = (
        "import sys, fastapi_stream, fastapi_stream.testing\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(CLIENTS)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
