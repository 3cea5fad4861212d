"""The OpenAPI 3.1 documents of both listeners: valid, complete, and true (T-IN-12).

Schemathesis' engine runs every one of its checks (server errors, statuses, content types,
headers, schemas, negative data refused, positive data accepted with each route's
documented statuses, missing required headers, unsupported methods and ``Allow``, ignored
authentication, resources after create/delete) over all its phases (examples, coverage,
fuzzing, stateful) against each listener served for real on loopback, within a bounded,
derandomized budget, and must find nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.engine
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from starlette.routing import Route

from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.server.openapi import path_template

from .conftest import ADMIN_TOKEN, MakeClient, OpenState, bearer, make_settings
from .live import live_listener

#: Cases per operation and phase; the whole run of one listener stays within seconds.
MAX_EXAMPLES = 5
UNDOCUMENTED = {"/openapi.json", "/docs"}


def served_operations(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, except the documents themselves."""
    return {
        (method.lower(), path_template(route.path))
        for route in app.routes
        if isinstance(route, Route) and route.path not in UNDOCUMENTED
        for method in route.methods or ()
        if method != "HEAD"
    }


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_each_listener_serves_a_valid_openapi_31_document(
    sqlite_state: KeyturnState, make_client: MakeClient, listener: str
) -> None:
    app = build_public_app(sqlite_state) if listener == "public" else build_admin_app(sqlite_state)
    client = make_client(app)

    response = await client.get("/openapi.json")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)
    assert documented_operations(document) == served_operations(app)


async def test_the_public_document_leaves_out_admin_routes(
    sqlite_public: httpx.AsyncClient,
) -> None:
    """T-OPS-01: the public listener does not even describe the admin API."""
    paths = (await sqlite_public.get("/openapi.json")).json()["paths"]

    assert not [path for path in paths if "admin" in path or "register" in path]
    assert "/v1/token" in paths
    assert "/authenticate" in paths


async def test_the_admin_document_describes_only_admin_routes(
    sqlite_admin: httpx.AsyncClient,
) -> None:
    paths = set((await sqlite_admin.get("/openapi.json")).json()["paths"])

    assert paths == {
        "/register_key",
        "/is_key_registered",
        "/v1/admin/keys",
        "/v1/admin/keys/{key_id}",
        "/v1/admin/keys/{key_id}/revoke",
        "/v1/admin/keys/{key_id}/rotate",
        "/v1/admin/keys/{key_id}/public-keys",
        "/v1/admin/keys/{key_id}/public-keys/{kid}",
        "/v1/admin/users",
        "/v1/admin/users/{user_id}",
        "/v1/admin/users/{user_id}/disable",
        "/v1/admin/users/{user_id}/enable",
        "/v1/admin/users/{user_id}/password",
        "/v1/admin/signing-keys",
        "/v1/admin/signing-keys/rotate",
        "/v1/admin/audit",
        "/v1/introspect",
        "/healthz",
        "/readyz",
        "/health",
        "/metrics",
    }


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_docs_is_an_html_page_listing_the_operations(
    sqlite_state: KeyturnState, make_client: MakeClient, listener: str
) -> None:
    app = build_public_app(sqlite_state) if listener == "public" else build_admin_app(sqlite_state)
    client = make_client(app)

    response = await client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.startswith("<!doctype html>")
    assert "openapi.json" in response.text
    path = "/v1/token" if listener == "public" else "/v1/admin/keys"
    assert f"<code>{path}</code>" in response.text
    assert "<script" not in response.text


# -- schemathesis --------------------------------------------------------------------------

#: Operations that may refuse a schema-valid request with 400, and why; each one's document
#: says so in its 400 response. Everywhere else a 400 means the request broke the document.
WELL_FORMED_400 = {
    # RFC 6749 §5.2: an unknown, expired or reused refresh token is invalid_grant (400),
    # and so is a refresh token of another client; Basic and client_secret both sent.
    ("post", "/v1/token"),
    # RFC 7009 §2.1: a token of another (authenticated) client is unauthorized_client (400),
    # and HTTP Basic beside client_secret or client_assertion is invalid_request (400).
    ("post", "/v1/revoke"),
    # Wrong credentials: invalid_grant (400), the tutorial's 400 "Wrong credentials".
    ("post", "/v1/login"),
    ("post", "/login"),
    # Rules no JSON Schema states: a printable key without Keyturn's prefixes ...
    ("post", "/register_key"),
    # ... the policy's roles and scopes, an expiry in the future ...
    ("post", "/v1/admin/keys"),
    # ... a JWK that is a usable public key of a supported type and size ...
    ("post", "/v1/admin/keys/{key_id}/public-keys"),
    # ... and the password rules (length, a list of common passwords).
    ("post", "/v1/admin/users"),
    ("post", "/v1/admin/users/{user_id}/password"),
}
#: Answers a schema-valid request can never get: a generated body is small and of the
#: documented media type.
MALFORMED_ONLY = {"413", "415"}


def positive_statuses(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per operation: the documented statuses a schema-valid request may get."""
    operations = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"]) - MALFORMED_ONLY
            if (method, path) not in WELL_FORMED_400:
                statuses.discard("400")
            operations.append(
                {
                    "include-name": f"{method.upper()} {path}",
                    "checks": {"positive_data_acceptance": {"expected-statuses": sorted(statuses)}},
                }
            )
    return operations


def schemathesis_findings(document: dict[str, Any], base_url: str) -> tuple[list[str], set[str]]:
    """Run every schemathesis check over every phase against ``base_url``.

    Returns the findings and the labels of the operations tested.
    """
    config = SchemathesisConfig.from_dict(
        {
            "seed": 20261208,
            "base-url": base_url,
            "workers": 1,
            # The admin credential where the document asks for it; generated otherwise.
            "auth": {"openapi": {"adminToken": {"bearer": ADMIN_TOKEN}}},
            "continue-on-failure": True,
            "output": {"sanitization": {"enabled": False}},
            # U+0000 is refused in all text (the documents say so in prose; PostgreSQL
            # cannot store it): tests/server/test_nul_text.py covers it.
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "allow-x00": False,
            },
            "checks": {"enabled": True},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True},
            },
            "operations": positive_statuses(document),
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)
    findings: list[str] = []
    tested: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            if event.label is not None and event.recorder.interactions:
                tested.add(event.label)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.failure_info is not None:
                        findings.append(_finding(event.recorder, case_id, check))
        elif isinstance(event, events.NonFatalError):
            findings.append(f"{event.label}: error: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            findings.append(f"schemathesis failed: {event.exception!r}")
    return findings, tested


def _finding(recorder: Any, case_id: str, check: Any) -> str:
    """One failed check, readable: operation, check, failure, response, how to reproduce."""
    case = recorder.cases[case_id].value
    interaction = recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    answer = "" if response is None else f"{response.status_code} {response.content[:300]!r}"
    failure = check.failure_info.failure
    return (
        f"{case.operation.label}: {check.name}: {failure.title}: {failure.message}\n"
        f"{answer}\n{check.failure_info.code_sample}"
    )


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_every_operation_conforms_to_its_document(
    postgresql_database_url: str, tmp_path: Path, listener: str
) -> None:
    """T-IN-12: schemathesis finds nothing, with all its checks over all its phases.

    On PostgreSQL, the stricter database: it refuses what SQLite stores (NUL, text longer
    than its column) and plans prepared statements generically from their sixth run, and
    every finding SQLite missed came from that; it also answers faster than a SQLite file
    that syncs every commit, which keeps the run within seconds.
    """
    settings_ = make_settings(
        postgresql_database_url, tmp_path, rate_limit_enabled=False, admin_token=ADMIN_TOKEN
    )
    with live_listener(listener, settings_) as live:
        document = httpx.get(f"{live.base_url}/openapi.json", headers=bearer(ADMIN_TOKEN)).json()
        findings, tested = schemathesis_findings(document, live.base_url)

    assert not findings, "\n\n".join(findings)
    assert tested == {
        f"{method.upper()} {path}" for method, path in documented_operations(document)
    }


# -- what the documents promise, and what the fuzzing found -------------------------------


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_every_operation_shows_a_request_and_a_response_example(
    sqlite_state: KeyturnState, make_client: MakeClient, listener: str
) -> None:
    """Finding 22: enough to call a route without opening the repository."""
    app = build_public_app(sqlite_state) if listener == "public" else build_admin_app(sqlite_state)
    document = (await make_client(app).get("/openapi.json")).json()

    without = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            success = next(code for code in operation["responses"] if code.startswith("2"))
            answer = operation["responses"][success]
            shown = [entry.get("example") for entry in answer.get("content", {}).values()]
            if "content" in answer and None in shown:
                without.append(f"{method} {path}: response")
            for entry in operation.get("requestBody", {}).get("content", {}).values():
                if "example" not in entry:
                    without.append(f"{method} {path}: request")
    assert without == []
    assert "docs/api.md" in document["info"]["description"]
    assert document["externalDocs"]["url"].endswith("/docs/api.md")
    page = (await make_client(app).get("/docs")).text
    assert "docs/api.md</a>" in page
    shown = (  # a request example, in the page too
        "grant_type=client_credentials&amp;scope=read"
        if listener == "public"
        else "&quot;name&quot;: &quot;billing-service&quot;"
    )
    assert shown in page


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_every_example_matches_its_schema(
    sqlite_state: KeyturnState, make_client: MakeClient, listener: str
) -> None:
    """An example that breaks its own schema would teach callers the wrong shape."""
    app = build_public_app(sqlite_state) if listener == "public" else build_admin_app(sqlite_state)
    document = (await make_client(app).get("/openapi.json")).json()

    def check(where: str, entry: dict[str, Any]) -> list[str]:
        if "example" not in entry:
            return []
        # "#/components/schemas/..." references resolve against this root.
        schema = {**entry["schema"], "components": document["components"]}
        errors = Draft202012Validator(schema).iter_errors(entry["example"])
        return [f"{where}: {error.message}" for error in errors]

    wrong = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for media, entry in operation.get("requestBody", {}).get("content", {}).items():
                wrong += check(f"{method} {path} request {media}", entry)
            for code, response in operation["responses"].items():
                for media, entry in response.get("content", {}).items():
                    wrong += check(f"{method} {path} {code} {media}", entry)
    assert wrong == []


async def test_the_admin_document_declares_the_admin_token_when_it_is_set(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(sqlite_database_url, admin_token=ADMIN_TOKEN)
    client = make_client(build_admin_app(state), headers=bearer(ADMIN_TOKEN))
    document = (await client.get("/openapi.json")).json()

    security = {
        (method, path): operation.get("security")
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    open_ = {key for key, value in security.items() if value is None}
    assert open_ == {("get", "/health"), ("get", "/healthz"), ("get", "/readyz")}
    assert {str(value) for key, value in security.items() if key not in open_} == {
        "[{'adminToken': []}]"
    }
    assert document["components"]["securitySchemes"] == {
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The admin credential, KEYTURN_ADMIN_TOKEN",
        }
    }
    assert "loopback callers too" in document["info"]["description"]
    assert "401" in document["paths"]["/v1/admin/keys"]["get"]["responses"]


async def test_without_an_admin_token_the_admin_document_says_loopback_needs_nothing(
    sqlite_admin: httpx.AsyncClient,
) -> None:
    document = (await sqlite_admin.get("/openapi.json")).json()

    assert not [
        path
        for path, item in document["paths"].items()
        for operation in item.values()
        if "security" in operation
    ]
    assert document["components"]["securitySchemes"] == {}
    assert "only loopback callers are admitted" in document["info"]["description"]


async def test_a_method_a_path_does_not_serve_gets_405_allowing_all_it_serves(
    sqlite_admin: httpx.AsyncClient,
) -> None:
    """Two routes share /v1/admin/keys (GET and POST): Allow names both (RFC 9110 §15.5.6)."""
    for method in ("OPTIONS", "DELETE", "PUT"):
        response = await sqlite_admin.request(method, "/v1/admin/keys")

        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, POST"
        assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=%C2%B2", "limit must be a non-negative integer"),  # "²" passes str.isdigit()
        ("limit=", "limit must be a non-negative integer"),
        ("include_revoked=yes", "include_revoked must be true or false"),
        ("include_revoked=", "include_revoked must be true or false"),
    ],
)
async def test_a_bad_list_query_is_a_400_not_a_500(
    sqlite_admin: httpx.AsyncClient, query: str, detail: str
) -> None:
    response = await sqlite_admin.get(f"/v1/admin/keys?{query}")

    assert response.status_code == 400
    assert response.json()["detail"] == detail


async def test_boolean_queries_take_true_and_false(sqlite_admin: httpx.AsyncClient) -> None:
    created = (await sqlite_admin.post("/v1/admin/keys", json={"name": "gone"})).json()
    await sqlite_admin.post(f"/v1/admin/keys/{created['record']['id']}/revoke")

    listed = {
        flag: [
            key["id"]
            for key in (await sqlite_admin.get(f"/v1/admin/keys?include_revoked={flag}")).json()[
                "keys"
            ]
        ]
        for flag in ("true", "false")
    }

    assert listed == {"true": [created["record"]["id"]], "false": []}
    rotate = await sqlite_admin.post("/v1/admin/signing-keys/rotate?immediately=soon")
    assert rotate.status_code == 400


@pytest.mark.parametrize("body", [{}, {"token": ""}, {"token_type_hint": "access_token"}])
async def test_introspection_without_a_token_is_a_400(
    sqlite_admin: httpx.AsyncClient, body: dict[str, str]
) -> None:
    """RFC 7662 §2.1: token is REQUIRED (it used to answer {"active": false})."""
    response = await sqlite_admin.post(
        "/v1/introspect", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "token is required"


@pytest.mark.parametrize(("grace", "status"), [(60.0, 200), (60, 200), (1.5, 400), ("60", 400)])
async def test_grace_seconds_is_an_integer_as_json_schema_counts_them(
    sqlite_admin: httpx.AsyncClient, grace: Any, status: int
) -> None:
    """JSON Schema's integer includes 60.0 (what the document promises); 1.5 is not one."""
    created = (await sqlite_admin.post("/v1/admin/keys", json={})).json()

    response = await sqlite_admin.post(
        f"/v1/admin/keys/{created['record']['id']}/rotate", json={"grace_seconds": grace}
    )

    assert response.status_code == status, response.text


@pytest.mark.parametrize(("length", "status"), [(255, 200), (256, 400)])
async def test_a_revocation_reason_fits_its_column(
    admin: httpx.AsyncClient, length: int, status: int
) -> None:
    """The model allowed 500 characters, the column 255: PostgreSQL answered a 500."""
    created = (await admin.post("/v1/admin/keys", json={})).json()

    response = await admin.post(
        f"/v1/admin/keys/{created['record']['id']}/revoke", json={"reason": "r" * length}
    )

    assert response.status_code == status, response.text


async def test_a_non_ascii_digit_as_content_length_is_a_413_not_a_500(
    sqlite_admin: httpx.AsyncClient,
) -> None:
    """b"\\xb2" reads as "²", which str.isdigit() accepts and int() refuses."""
    response = await sqlite_admin.post(
        "/v1/admin/keys",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": b"\xb2"},  # type: ignore[dict-item]
    )

    assert response.status_code == 413
