"""The ``fastapi-stream`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fastapi_stream import cli
from tests.asyncapi.checks import assert_valid

APP = "examples.asyncapi.app:app"
runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(cli.cli, list(args))


def test_gen_prints_the_3_0_document_of_an_app() -> None:
    result = run("docs", "gen", APP)
    assert result.exit_code == 0, result.output
    document = assert_valid(json.loads(result.stdout))
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "Dispatch"  # read from the FastAPI app


def test_gen_yaml_2_6_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = run("docs", "gen", APP, "--yaml", "--version", "2.6.0", "--out", str(out))
    assert result.exit_code == 0, result.output
    document = assert_valid(yaml.safe_load(out.read_text()))
    assert document["asyncapi"] == "2.6.0"
    assert "shipments.{region}" in document["channels"]


def test_gen_of_a_stream_router() -> None:
    result = run("docs", "gen", "examples.asyncapi.app:router")
    assert result.exit_code == 0, result.output
    assert "dispatch" in json.loads(result.stdout)["operations"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("examples.asyncapi.app", "module:attribute"),
        ("no_such_module:app", "cannot import"),
        ("examples.asyncapi.app:nothing", "no attribute"),
    ],
)
def test_gen_explains_a_wrong_target(target: str, message: str) -> None:
    result = run("docs", "gen", target)
    assert result.exit_code == 2
    assert message in result.output


def test_gen_refuses_an_unknown_version() -> None:
    result = run("docs", "gen", APP, "--version", "1.0.0")
    assert result.exit_code == 2 and "3.0.0" in result.output


def test_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    assert run("docs", "gen", APP, "--out", str(good)).exit_code == 0
    result = run("docs", "validate", str(good))
    assert result.exit_code == 0 and "valid AsyncAPI 3.0.0" in result.stdout
    good_yaml = tmp_path / "good.yaml"
    assert run("docs", "gen", APP, "--yaml", "--out", str(good_yaml)).exit_code == 0
    assert run("docs", "validate", str(good_yaml)).exit_code == 0
    broken = json.loads(good.read_text())
    del broken["info"]["version"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    result = run("docs", "validate", str(bad))
    assert result.exit_code == 1
    assert "'version' is a required property" in result.output


def test_serve_serves_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(
        cli.uvicorn, "run", lambda app, host, port: served.update(app=app, host=host, port=port)
    )
    result = run("docs", "serve", APP, "--port", "8123")
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    client = TestClient(served["app"])
    assert "shipments.{region}" in client.get("/asyncapi").text
    assert client.get("/").url.path == "/asyncapi"
    assert_valid(client.get("/asyncapi.json").json())
    assert yaml.safe_load(client.get("/asyncapi.yaml").text)["asyncapi"] == "3.0.0"
