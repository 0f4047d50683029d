"""The ``fastapi-stream`` command (needs the ``cli`` extra).

``fastapi-stream docs gen module:app`` prints the AsyncAPI document of a FastAPI app,
``docs serve module:app`` serves its docs page, ``docs validate FILE`` checks a document
against the official AsyncAPI schema. The app is imported, never started: no broker is
connected.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fastapi_stream.asyncapi import _yaml
from fastapi_stream.asyncapi.document import VERSIONS, get_asyncapi
from fastapi_stream.asyncapi.page import CONTENT_SECURITY_POLICY, render_page
from fastapi_stream.asyncapi.validate import validate
from fastapi_stream.router import StreamRouter

__all__ = ["cli", "docs_app", "load", "main"]

cli = typer.Typer(
    help="Tools for FastAPI apps with message brokers.",
    no_args_is_help=True,
    add_completion=False,
)
docs = typer.Typer(help="AsyncAPI documents of an app.", no_args_is_help=True)
cli.add_typer(docs, name="docs")

AppPath = Annotated[str, typer.Argument(help="The app to document, as module:attribute.")]
AppDir = Annotated[
    Path, typer.Option("--app-dir", help="Where to import the module from.", show_default=True)
]


def load(target: str, app_dir: Path = Path(".")) -> Any:
    """The object ``module:attribute`` names (``attribute`` may be dotted)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(f"{target!r}: write it as module:attribute, e.g. main:app")
    sys.path.insert(0, str(app_dir.resolve()))
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise typer.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise typer.BadParameter(f"{module_name!r} has no attribute {attribute!r}") from None
    return found


def document_of(target: Any, asyncapi_version: str) -> dict[str, Any]:
    """The document of a FastAPI app, or of one StreamRouter."""
    if asyncapi_version not in VERSIONS:
        raise typer.BadParameter(
            f"AsyncAPI version {asyncapi_version!r}: use one of {', '.join(VERSIONS)}"
        )
    routers = [target] if isinstance(target, StreamRouter) else None
    return get_asyncapi(target, asyncapi_version=asyncapi_version, routers=routers)


@docs.command("gen")
def gen(
    app: AppPath,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Write YAML instead of JSON.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    version: Annotated[str, typer.Option("--version", help="The AsyncAPI version.")] = VERSIONS[0],
    app_dir: AppDir = Path("."),
) -> None:
    """Print (or write) the AsyncAPI document of APP."""
    document = document_of(load(app, app_dir), version)
    text = _yaml.dump(document) if as_yaml else json.dumps(document, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)


@docs.command("serve")
def serve(
    app: AppPath,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8001,
    app_dir: AppDir = Path("."),
) -> None:
    """Serve the docs page of APP (for development: the document is built once)."""
    document = document_of(load(app, app_dir), VERSIONS[0])
    typer.echo(f"AsyncAPI docs of {app} on http://{host}:{port}/asyncapi", err=True)
    uvicorn.run(docs_app(document), host=host, port=port)


@docs.command("validate")
def validate_file(
    file: Annotated[Path, typer.Argument(help="A JSON or YAML AsyncAPI document.")],
) -> None:
    """Check FILE against the official AsyncAPI schema of its version."""
    text = file.read_text(encoding="utf-8")
    if file.suffix in (".yaml", ".yml"):
        document = importlib.import_module("yaml").safe_load(text)
    else:
        document = json.loads(text)
    if not isinstance(document, dict):
        typer.echo(f"{file}: not an AsyncAPI document", err=True)
        raise typer.Exit(1)
    problems = validate(document)
    for problem in problems:
        typer.echo(f"{file}: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{file}: valid AsyncAPI {document['asyncapi']}")


def docs_app(document: dict[str, Any]) -> Starlette:
    """An ASGI app serving ``document``: the page, ``.json`` and ``.yaml``."""
    page = render_page(document, links={"JSON": "asyncapi.json", "YAML": "asyncapi.yaml"})
    yaml_text = _yaml.dump(document)

    async def html(request: Request) -> Response:
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
        return HTMLResponse(page, headers=headers)

    async def as_json(request: Request) -> Response:
        return JSONResponse(document)

    async def as_yaml(request: Request) -> Response:
        return Response(yaml_text, media_type="application/yaml")

    async def home(request: Request) -> Response:
        return RedirectResponse("/asyncapi")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/asyncapi", html),
            Route("/asyncapi.json", as_json),
            Route("/asyncapi.yaml", as_yaml),
        ]
    )


def main() -> None:
    cli()
