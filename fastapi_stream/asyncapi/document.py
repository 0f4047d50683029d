"""The AsyncAPI document of an app, in 3.0.0 (the default) or 2.6.0."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastapi_stream.asyncapi.build import write_v3
from fastapi_stream.asyncapi.collect import collect
from fastapi_stream.asyncapi.v2_6 import write_v2_6

if TYPE_CHECKING:
    from fastapi_stream.router import StreamRouter

__all__ = ["VERSIONS", "get_asyncapi"]

#: The AsyncAPI versions :func:`get_asyncapi` writes; the first is the default.
VERSIONS = ("3.0.0", "2.6.0")


def get_asyncapi(
    app: Any,
    *,
    asyncapi_version: str = "3.0.0",
    title: str | None = None,
    version: str | None = None,
    description: str | None = None,
    contact: dict[str, Any] | None = None,
    license_info: dict[str, Any] | None = None,
    tags: list[dict[str, Any]] | None = None,
    asyncapi_id: str | None = None,
    routers: Iterable[StreamRouter] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI document of every StreamRouter included in ``app``.

    ``title``, ``version``, ``description``, ``contact``, ``license_info`` and ``tags``
    default to the FastAPI app's own (``openapi_tags`` for the tags). ``asyncapi_id`` is
    the 2.6.0 document's ``id`` (3.0.0 has none), by default ``app.state.asyncapi_id``
    when the app has one. ``routers`` documents
    those StreamRouters instead of the ones found in ``app``. No broker is started.
    """
    if asyncapi_version not in VERSIONS:
        raise ValueError(
            f"AsyncAPI version {asyncapi_version!r} is not supported; use one of {VERSIONS}"
        )
    spec = collect(
        app,
        asyncapi_version=asyncapi_version,
        routers=routers,
        title=title,
        version=version,
        description=description,
        contact=contact,
        license_info=license_info,
        tags=tags,
        asyncapi_id=asyncapi_id,
    )
    return write_v3(spec) if asyncapi_version == "3.0.0" else write_v2_6(spec)
