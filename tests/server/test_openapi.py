"""The OpenAPI 3.1 documents of both listeners: valid, complete, and true (T-IN-12).

Schemathesis generates requests from each document and checks every response against
it: no 5xx, only documented statuses, bodies matching their schemas. It runs in process,
on the test's own event loop, within a bounded, derandomized budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import LOOPBACK, START, MakeClient, make_settings

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: Per operation; with the coverage phase's fixed cases the whole run stays well under 60 s.
BUDGET = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
UNDOCUMENTED = {"/openapi.json", "/docs"}


def served_operations(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, except the documents themselves."""
    return {
        (method.lower(), route.path)
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


@dataclass
class Served:
    """An app and a client to it, driven from a private event loop (Hypothesis is sync)."""

    runner: asyncio.Runner
    state: KeyturnState
    client: httpx.AsyncClient
    document: dict[str, Any]

    def send(self, case: schemathesis.Case[Any]) -> httpx.Response:
        """Send a generated case in process and return the response."""
        # Schemathesis serialises cases for `requests`; let `requests` encode the body.
        prepared = requests.Request(**case.as_transport_kwargs(base_url="http://kt.test")).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        assert body is None or isinstance(body, bytes)
        headers = {name: str(value) for name, value in prepared.headers.items()}
        return self.runner.run(
            self.client.request(
                str(prepared.method), str(prepared.url), headers=headers, content=body
            )
        )


def _serve(listener: str, database_url: str, data_dir: Path) -> Iterator[Served]:
    with asyncio.Runner() as runner:
        settings_ = make_settings(database_url, data_dir)
        state = runner.run(KeyturnState.open(settings_, background=False, clock=FakeClock(START)))
        app = build_public_app(state) if listener == "public" else build_admin_app(state)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=LOOPBACK), base_url="http://kt.test"
        )
        try:
            document = runner.run(client.get("/openapi.json")).json()
            yield Served(runner, state, client, document)
        finally:
            runner.run(client.aclose())
            runner.run(state.close())


@pytest.fixture
def served_public(sqlite_database_url: str, tmp_path: Path) -> Iterator[Served]:
    """The public listener over SQLite, for schemathesis."""
    yield from _serve("public", sqlite_database_url, tmp_path)


@pytest.fixture
def served_admin(sqlite_database_url: str, tmp_path: Path) -> Iterator[Served]:
    """The admin listener over SQLite (from loopback), for schemathesis."""
    yield from _serve("admin", sqlite_database_url, tmp_path)


@pytest.fixture(params=["public", "admin"])
def served(
    request: pytest.FixtureRequest, sqlite_database_url: str, tmp_path: Path
) -> Iterator[Served]:
    """Each listener over SQLite, seen from loopback."""
    yield from _serve(request.param, sqlite_database_url, tmp_path)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms_to_its_document(served: Served, mode: GenerationMode) -> None:
    """T-IN-12: no 5xx, only documented statuses, bodies as documented."""
    schema = schemathesis.openapi.from_dict(served.document)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == len(documented_operations(served.document))

    for operation in operations:

        @BUDGET
        @given(case=operation.as_strategy(generation_mode=mode))
        def conforms(case: schemathesis.Case[Any]) -> None:
            case.validate_response(served.send(case), checks=CHECKS)

        try:
            conforms()
        except Unsatisfiable:  # nothing about this operation can be made invalid
            continue
        except (Exception, FailureGroup) as exc:  # collect every operation's failures
            failures.append(f"{operation.label}: {exc}")

    assert failures == []
