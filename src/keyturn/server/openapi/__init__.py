"""The OpenAPI 3.1 document, generated from the pydantic models and the routes served.

Each operation lists every status it can answer with, the credential it needs and a
request and a response example, so schema-driven fuzzers (schemathesis) can check the
server against it and a person can call a route without reading the code. The prose
reference is ``docs/api.md``.

The operations are declared per route family, beside the building blocks they share:
`keyturn.server.openapi.legacy`, `.v1` and `.admin` (``_parts`` holds the bodies, error
responses, parameters and examples); this module assembles the document.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from typing import Any, Final
from urllib.parse import urlencode

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Route

from keyturn import schemas as models
from keyturn.__about__ import __version__
from keyturn.config import Settings
from keyturn.server.openapi import admin, legacy, v1
from keyturn.server.openapi._parts import (
    _ADMIN_401,
    _FORM,
    _REF,
    _Op,
    _ref,
)

__all__ = ["OPERATIONS", "docs_page", "openapi_document", "path_template"]

_CONVERTOR: Final = re.compile(r"\{(\w+):\w+\}")

#: Every operation the two listeners may serve, by (method, path without the prefix).
OPERATIONS: dict[tuple[str, str], _Op] = {**legacy.OPERATIONS, **v1.OPERATIONS, **admin.OPERATIONS}

_COMPONENT_MODELS: tuple[type[BaseModel], ...] = (
    models.AuthenticateRequest,
    models.RefreshRequest,
    models.ValidateRequest,
    models.RegisterKeyRequest,
    models.KeyRequest,
    models.LegacyTokenResponse,
    models.BoolResponse,
    models.TokenResponse,
    models.IntrospectionOut,
    models.JWKSOut,
    models.LoginResponse,
    models.CreateKeyRequest,
    models.RevokeKeyRequest,
    models.RotateKeyRequest,
    models.KeyOut,
    models.PublicKeyOut,
    models.PublicKeysOut,
    models.CreatedKeyOut,
    models.KeyPageOut,
    models.SigningKeyOut,
    models.AuditEventOut,
    models.AuditPage,
    models.CreateUserRequest,
    models.SetPasswordRequest,
    models.DisableUserRequest,
    models.UserOut,
    models.UserPageOut,
)


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "error": {"type": "string"},
            },
            "required": ["type", "title", "status"],
        },
        "OAuthError": {
            "type": "object",
            "description": "RFC 6749 §5.2 error",
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
            "required": ["error"],
        },
    }
    for model in _COMPONENT_MODELS:
        schema = model.model_json_schema(ref_template=_REF, mode="validation")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema
    return schemas


_METADATA: Final = "/.well-known/oauth-authorization-server"
#: Where the prose reference lives (linked from the document and the /docs page).
API_REFERENCE = "https://github.com/keyturn/keyturn/blob/main/docs/api.md"
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token Keyturn issued (POST /v1/token, /authenticate, /v1/login)",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "Client authentication (RFC 6749 §2.3.1): user name the key id (or "
        "empty), password the API key; or send client_secret in the body instead",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin credential, KEYTURN_ADMIN_TOKEN",
    },
}
_OPEN_ON_ADMIN = frozenset({"/health", "/healthz", "/readyz"})


def openapi_document(app: Starlette, *, title: str, settings: Settings) -> dict[str, Any]:
    """Describe every route ``app`` serves (OpenAPI 3.1).

    On the admin listener (``app.state.trusted_admin``) every route but the health checks
    sits behind `AdminGuard`: its 401 is documented on each, and the admin token is
    declared as each one's security when ``KEYTURN_ADMIN_TOKEN`` is set (then it is
    demanded from every caller, loopback too); unset, loopback callers need nothing.
    """
    admin = bool(getattr(app.state, "trusted_admin", False))
    guarded = settings.admin_token is not None
    paths = _paths(app, settings.url_prefix, admin=admin, guarded=guarded)
    used = {
        name
        for item in paths.values()
        for operation in item.values()
        for requirement in operation.get("security", ())
        for name in requirement
    }
    access = (
        "Every route but /health, /healthz and /readyz needs the admin bearer token "
        "(KEYTURN_ADMIN_TOKEN), from loopback callers too."
        if guarded
        else "KEYTURN_ADMIN_TOKEN is unset: only loopback callers are admitted, with no "
        "credential; others get 401."
    )
    description = "Keyturn turns API keys into short-lived, signed JWTs. " + (
        access if admin else ""
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": f"{description.strip()} Text may not contain U+0000: in an "
            "OAuth-style parameter, an admin body, query or path it is a 400. The reference, "
            f"with curl examples: [docs/api.md]({API_REFERENCE}).",
        },
        "externalDocs": {"description": "API reference (docs/api.md)", "url": API_REFERENCE},
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                name: scheme for name, scheme in _SECURITY_SCHEMES.items() if name in used
            },
        },
    }


def path_template(path: str) -> str:
    """A Starlette route path as an OpenAPI path template (``{path:path}`` -> ``{path}``)."""
    return _CONVERTOR.sub(r"{\1}", path)


def _paths(app: Starlette, prefix: str, *, admin: bool, guarded: bool) -> dict[str, dict[str, Any]]:
    """The ``paths`` object: each route's documented methods (the admin 401 on the admin)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        if not isinstance(route, Route):
            continue
        template = path_template(route.path)
        path = template.removeprefix(prefix) or "/"
        if prefix and path == f"{_METADATA}{prefix}":  # RFC 8414 §3.1's place for it
            path = _METADATA
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op = OPERATIONS.get((method.lower(), path))
            if op is None:
                continue
            if admin and path not in _OPEN_ON_ADMIN:
                op = replace(
                    op,
                    responses={**op.responses, "401": _ADMIN_401},
                    security=("adminToken",) if guarded else (),
                )
            paths.setdefault(template, {})[method.lower()] = _operation(op)
    return paths


def _operation(op: _Op) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": op.responses}
    if op.request is not None:
        schema = _ref(op.request) if isinstance(op.request, type) else op.request
        content: dict[str, Any] = {}
        for media in op.request_types:
            content[media] = {"schema": schema}
            if op.example is not None:
                content[media]["example"] = op.example
        operation["requestBody"] = {"required": op.body_required, "content": content}
    if op.params:
        operation["parameters"] = list(op.params)
    if op.security:
        operation["security"] = [{name: []} if name else {} for name in op.security]
    if op.answer is not None:
        status = next(code for code in op.responses if code.startswith("2"))
        answer = dict(op.responses[status])
        answer["content"] = {
            media: {**entry, "example": op.answer} for media, entry in answer["content"].items()
        }
        operation["responses"] = {**op.responses, status: answer}
    return operation


def _example_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, ensure_ascii=False)


def _examples(op: dict[str, Any]) -> tuple[str, str]:
    """The request (parameters and body) and the success response an operation shows."""
    asked = [f"{parameter['in']} {parameter['name']}" for parameter in op.get("parameters", ())]
    for media, entry in op.get("requestBody", {}).get("content", {}).items():
        if "example" in entry:
            example = entry["example"]
            text = urlencode(example) if media == _FORM else _example_text(example)
            asked.append(f"{media}\n{text}")
            break
    answered = ""
    for code, response in op["responses"].items():
        if code.startswith("2"):
            for media, entry in response.get("content", {}).items():
                if "example" in entry:
                    answered = f"{code} {media}\n{_example_text(entry['example'])}"
            answered = answered or f"{code} {response['description']}"
            break
    return "\n".join(asked), answered


def docs_page(document: dict[str, Any]) -> str:
    """A small self-contained HTML page listing the operations (no external assets)."""
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            statuses = ", ".join(op["responses"])
            asked, answered = _examples(op)
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(statuses)}</td><td><pre>{html.escape(asked)}</pre></td>"
                f"<td><pre>{html.escape(answered)}</pre></td></tr>"
            )
    title = html.escape(document["info"]["title"])
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2rem}}"
        "td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left;"
        "vertical-align:top}pre{margin:0;max-width:28rem;white-space:pre-wrap;"
        "word-break:break-all;font-size:.8rem}</style>"
        f"</head><body><h1>{title}</h1><p>Machine-readable: <a href='openapi.json'>"
        "openapi.json</a> (OpenAPI 3.1, with a request and a response example per route). "
        f"The reference, with curl examples: <a href='{API_REFERENCE}'>docs/api.md</a>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What it does</th><th>Statuses</th>"
        "<th>Request</th><th>Response</th></tr>"
        f"{''.join(rows)}</table></body></html>"
    )
