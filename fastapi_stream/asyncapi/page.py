"""The docs page: an AsyncAPI 3.0.0 document rendered to HTML on the server.

No script, no stylesheet or font from elsewhere: the page works with no internet, and a
Content-Security-Policy that forbids scripts keeps it that way. Every string taken from the
document goes through ``html.escape``, so a description holding ``</script>`` or
``<img onerror=...>`` shows as text. Payload and header schemas render as nested tables;
a reference to a named schema is a link to its table in the *Schemas* section.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from fastapi_stream.asyncapi.schemas import REF_PREFIX

__all__ = ["CONTENT_SECURITY_POLICY", "render_page"]

JSON = Mapping[str, Any]

#: Sent with the page (and repeated in it): nothing runs, nothing loads from elsewhere.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_MAX_DEPTH = 6
_DETAILS = (
    "format",
    "default",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
)

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:70rem;padding:1rem 2rem;
color:#1f2328}
header{border-bottom:1px solid #d0d7de;margin-bottom:1rem}
nav a{margin-right:1rem}
h1 small{color:#59636e;font-weight:normal;font-size:60%}
article{border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.badge{border-radius:4px;color:#fff;font-size:75%;padding:.1rem .4rem;margin-right:.5rem}
.receive{background:#1a7f37}.send{background:#0969da}
table{border-collapse:collapse;margin:.3rem 0;width:100%}
th,td{border:1px solid #d0d7de;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td table{margin:.3rem 0 0}
.text{white-space:pre-wrap}.muted{color:#59636e}code{font-size:90%}
"""


def _e(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return html.escape(text, quote=True)


def render_page(document: JSON, *, links: Mapping[str, str] | None = None) -> str:
    """The HTML page of ``document``; ``links`` are shown at the top (label -> URL)."""
    info = document.get("info", {})
    title = str(info.get("title", "AsyncAPI"))
    nav = " ".join(f'<a href="{_e(url)}">{_e(label)}</a>' for label, url in (links or {}).items())
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)} - AsyncAPI</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{_e(title)} <small>{_e(info.get('version', ''))}</small></h1>",
        _text(info.get("description")),
        f"<nav>{nav}</nav>" if nav else "",
        f'<p class="muted">AsyncAPI {_e(document.get("asyncapi", ""))}</p></header>',
        _servers(document.get("servers", {})),
        _operations(document),
        _schemas(document.get("components", {}).get("schemas", {})),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _text(value: Any, tag: str = "p") -> str:
    return f'<{tag} class="text">{_e(value)}</{tag}>' if value else ""


def _servers(servers: JSON) -> str:
    if not servers:
        return ""
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(s.get('protocol', ''))}</td><td><code>"
        f"{_e(s.get('host', s.get('url', '')))}{_e(s.get('pathname', ''))}</code></td>"
        f"<td>{_e(s.get('description', ''))}</td></tr>"
        for name, s in servers.items()
    )
    return (
        '<section id="servers"><h2>Servers</h2><table><tr><th>name</th><th>protocol</th>'
        f"<th>host</th><th>description</th></tr>{rows}</table></section>"
    )


def _operations(document: JSON) -> str:
    channels = document.get("channels", {})
    messages = document.get("components", {}).get("messages", {})
    schemas = document.get("components", {}).get("schemas", {})
    articles = []
    for op_id, op in document.get("operations", {}).items():
        channel = channels.get(_last(op.get("channel", {}).get("$ref", "")), {})
        action = str(op.get("action", ""))
        body = [
            f'<article id="operation-{_e(op_id)}"><h3><span class="badge {_e(action)}">'
            f"{_e(action.upper())}</span><code>{_e(channel.get('address', ''))}</code> "
            f'<small class="muted">{_e(op.get("title") or op_id)}</small></h3>',
            _text(op.get("description")),
        ]
        parameters = channel.get("parameters", {})
        if parameters:
            names = ", ".join(f"<code>{_e(name)}</code>" for name in parameters)
            body.append(f"<p>Channel parameters: {names}</p>")
        # An operation without "messages" handles every message of its channel.
        for ref in op.get("messages") or list(channel.get("messages", {}).values()):
            message = messages.get(_last(ref.get("$ref", "")), {})
            body.append(_message(message, "Message", schemas))
        for ref in op.get("reply", {}).get("messages", []):
            message = messages.get(_last(ref.get("$ref", "")), {})
            body.append(_message(message, "Reply", schemas))
        body.append("</article>")
        articles.append("".join(body))
    if not articles:
        return '<section id="operations"><h2>Operations</h2><p>None.</p></section>'
    return '<section id="operations"><h2>Operations</h2>' + "".join(articles) + "</section>"


def _message(message: JSON, label: str, schemas: JSON) -> str:
    parts = [f"<h4>{_e(label)}: {_e(message.get('title') or message.get('name', ''))}</h4>"]
    parts.append(_text(message.get("description")))
    payload = message.get("payload", {})
    ref = payload.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX) and _last(ref) in schemas:
        # The payload's own fields right here; the models inside it are links.
        parts.append(f"<p><b>Payload</b>: {_type(payload)}</p>")
        payload = schemas[_last(ref)]
    else:
        parts.append("<p><b>Payload</b></p>")
    parts.append(_schema(payload, 0))
    if "headers" in message:
        parts.append("<p><b>Headers</b></p>" + _schema(message["headers"], 0))
    for example in message.get("examples", []):
        parts.append(f"<p><b>Example</b></p><pre>{_e(json.dumps(example, indent=2))}</pre>")
    return "".join(parts)


def _schemas(schemas: JSON) -> str:
    if not schemas:
        return ""
    articles = "".join(
        f'<article id="schema-{_e(name)}"><h3>{_e(name)}</h3>'
        f"{_text(schema.get('description'))}{_schema(schema, 0)}</article>"
        for name, schema in schemas.items()
    )
    return f'<section id="schemas"><h2>Schemas</h2>{articles}</section>'


def _schema(schema: JSON, depth: int) -> str:
    """A schema as a table of its properties, or as one line for anything else."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or depth > _MAX_DEPTH:
        return f"<p>{_type(schema)}{_details(schema)}</p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in properties.items():
        nested = _nested(prop)
        rows.append(
            f"<tr><td><code>{_e(name)}</code>{' *' if name in required else ''}</td>"
            f"<td>{_type(prop)}</td><td>{_text(prop.get('description'), 'div')}"
            f"{_details(prop)}{_schema(nested, depth + 1) if nested else ''}</td></tr>"
        )
    return (
        "<table><tr><th>field (* required)</th><th>type</th><th>details</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _nested(schema: JSON) -> JSON | None:
    """An inline object (not a reference) worth its own table: itself, or its items."""
    for candidate in (schema, schema.get("items")):
        if isinstance(candidate, Mapping) and isinstance(candidate.get("properties"), Mapping):
            return candidate
    return None


def _type(schema: Any) -> str:
    if not isinstance(schema, Mapping) or not schema:
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref[len(REF_PREFIX) :] if ref.startswith(REF_PREFIX) else ref
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    for combinator in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(combinator), list):
            joiner = " &amp; " if combinator == "allOf" else " | "
            return joiner.join(_type(s) for s in schema[combinator])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items'))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"map of {_type(schema['additionalProperties'])}"
    return _e(" | ".join(kind) if isinstance(kind, list) else kind)


def _details(schema: JSON) -> str:
    found = [f"{_e(key)}: <code>{_e(schema[key])}</code>" for key in _DETAILS if key in schema]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        found.append("examples: " + ", ".join(f"<code>{_e(x)}</code>" for x in examples))
    return f'<div class="muted">{"; ".join(found)}</div>' if found else ""


def _last(ref: str) -> str:
    """The last segment of a local ``$ref``."""
    return ref.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
