"""The docs routes a StreamRouter adds: ``GET {schema_url}`` (the HTML page),
``{schema_url}.json`` and ``{schema_url}.yaml``.

They are ordinary routes of the router, added when it is created: they follow every
prefix it is included under, take the ``dependencies`` it is included with, exist before
the app starts and stay out of the OpenAPI schema. Each answers with the document of the
whole app (every StreamRouter in it), so with several StreamRouters any of their docs
routes shows every broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from fastapi_stream.asyncapi import _yaml
from fastapi_stream.asyncapi.collect import register_docs_endpoint, stream_routers
from fastapi_stream.asyncapi.document import get_asyncapi
from fastapi_stream.asyncapi.page import CONTENT_SECURITY_POLICY, render_page
from fastapi_stream.core.errors import ConfigurationError

if TYPE_CHECKING:
    from fastapi_stream.router import StreamRouter

__all__ = ["add_asyncapi_routes"]


def add_asyncapi_routes(router: StreamRouter, schema_url: str) -> None:
    """Add the docs page and the JSON and YAML documents under ``schema_url``."""
    if not schema_url.strip("/"):
        raise ConfigurationError(f"schema_url must name a path, not {schema_url!r}")
    path = "/" + schema_url.strip("/")
    name = path.rsplit("/", 1)[-1]

    def document(request: Request) -> dict[str, Any]:
        app = request.app
        # A router reached some other way than include_router (app.mount(path, router))
        # is not among the app's routes: it documents itself.
        found = stream_routers(app)
        return get_asyncapi(app, routers=found if router in found else [*found, router])

    @router.get(path, include_in_schema=False)
    async def asyncapi_page(request: Request) -> HTMLResponse:
        # Relative links: they keep working under any prefix and root_path.
        links = {"JSON": f"{name}.json", "YAML": f"{name}.yaml"}
        docs_url = getattr(request.app, "docs_url", None)
        if docs_url:
            links["HTTP API (Swagger UI)"] = request.scope.get("root_path", "") + docs_url
        return HTMLResponse(
            render_page(document(request), links=links),
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    @router.get(f"{path}.json", include_in_schema=False)
    async def asyncapi_json(request: Request) -> JSONResponse:
        return JSONResponse(document(request))

    @router.get(f"{path}.yaml", include_in_schema=False)
    async def asyncapi_yaml(request: Request) -> Response:
        return Response(_yaml.dump(document(request)), media_type="application/yaml")

    for endpoint in (asyncapi_page, asyncapi_json, asyncapi_yaml):
        register_docs_endpoint(endpoint, router)
