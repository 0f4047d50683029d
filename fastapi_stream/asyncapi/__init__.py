"""AsyncAPI documents (3.0.0 and 2.6.0) of the StreamRouters of an app, and the docs page.

Every StreamRouter with a broker serves ``/asyncapi`` (the page), ``/asyncapi.json`` and
``/asyncapi.yaml``; :func:`get_asyncapi` builds the same document from code, and the
``fastapi-stream docs`` command from the shell. Broker-free: a transport adds its broker's
bindings through :class:`BindingsProvider`.
"""

from fastapi_stream.asyncapi.collect import stream_routers
from fastapi_stream.asyncapi.document import VERSIONS, get_asyncapi
from fastapi_stream.asyncapi.models import BindingsProvider
from fastapi_stream.asyncapi.page import render_page
from fastapi_stream.asyncapi.routes import add_asyncapi_routes
from fastapi_stream.asyncapi.validate import validate

__all__ = [
    "VERSIONS",
    "BindingsProvider",
    "add_asyncapi_routes",
    "get_asyncapi",
    "render_page",
    "stream_routers",
    "validate",
]
