"""Requests cancelled at the shutdown timeout answer 503; clients that hang up count 499.

Raw ASGI calls into both listeners' apps: the server cancels a request's task when
``shutdown_timeout`` runs out, and gives ``receive`` an ``http.disconnect`` when its
client hangs up mid-body.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.server.errors import CLIENT_CLOSED
from keyturn.server.listeners import FD_RESERVE, public_max_connections

from .conftest import IDENTIFIER, LEGACY_KEY, LOOPBACK, make_settings

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]


def scope(method: str, path: str, body_type: bytes = b"application/json") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"kt.test"), (b"content-type", body_type)],
        "client": LOOPBACK,
        "server": ("127.0.0.1", 8080),
        "state": {},
    }


async def cancelled_call(app: Any, request: dict[str, Any], receive: Receive) -> list[Message]:
    """Run ``app`` until it waits in ``receive``'s second call or its own work, cancel it
    (as the shutdown timeout does), and return what it sent; it must not raise."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    task = asyncio.ensure_future(app(request, receive, send))
    for _ in range(100):  # let it run up to its first real wait
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    await task  # swallowed: the answer was the 503
    return sent


def never_more(first: bytes | None = None) -> Receive:
    """A ``receive`` that gives ``first`` (with more to come), then waits for ever."""
    given = first is None

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def hang_up_after(first: bytes) -> Receive:
    """A ``receive`` that gives ``first`` (with more to come), then a disconnect."""
    messages = [
        {"type": "http.request", "body": first, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    return receive


def assert_stopping(sent: list[Message]) -> None:
    start, body = sent
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    assert headers[b"connection"] == b"close"
    assert b"x-request-id" in headers
    assert json.loads(body["body"])["error"] == "server_stopping"


def count(state: KeyturnState, listener: str, route: str, status: int) -> float:
    wanted = f'listener="{listener}",method="POST",route="{route}",status="{status}"'
    for line in state.metrics.render().decode().splitlines():
        if line.startswith("keyturn_http_requests_total{") and wanted in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("route", ["/refresh", "/validate", "/v1/token", "/authenticate"])
async def test_a_request_cancelled_while_its_body_comes_answers_503(
    sqlite_state: KeyturnState, route: str
) -> None:
    app = build_public_app(sqlite_state)
    body_type = b"application/x-www-form-urlencoded" if route == "/v1/token" else None
    request = scope("POST", route, body_type or b"application/json")

    sent = await cancelled_call(app, request, never_more(b"{"))

    assert_stopping(sent)
    assert count(sqlite_state, "public", route, 503) == 1
    assert count(sqlite_state, "public", route, 500) == 0


async def test_a_request_cancelled_in_the_service_answers_503(
    sqlite_state: KeyturnState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path's ``POST /authenticate``, cancelled while the service works."""

    async def stuck(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(sqlite_state.service, "authenticate", stuck)
    app = build_public_app(sqlite_state)
    body = json.dumps({"key": LEGACY_KEY, "identifier": IDENTIFIER}).encode()

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    sent = await cancelled_call(app, scope("POST", "/authenticate"), receive)

    assert_stopping(sent)
    assert count(sqlite_state, "public", "/authenticate", 503) == 1


async def test_an_admin_request_cancelled_answers_503(sqlite_state: KeyturnState) -> None:
    app = build_admin_app(sqlite_state)

    sent = await cancelled_call(app, scope("POST", "/v1/admin/keys"), never_more(b"{"))

    assert_stopping(sent)
    assert count(sqlite_state, "admin", "/v1/admin/keys", 503) == 1


@pytest.mark.parametrize(
    ("app_for", "listener", "route"),
    [
        (build_public_app, "public", "/refresh"),
        (build_public_app, "public", "/authenticate"),
        (build_public_app, "public", "/validate"),
        (build_public_app, "public", "/v1/token"),
        (build_admin_app, "admin", "/register_key"),
    ],
)
async def test_a_client_hanging_up_mid_body_counts_as_499_not_500(
    sqlite_state: KeyturnState, app_for: Any, listener: str, route: str
) -> None:
    app = app_for(sqlite_state)
    body_type = b"application/x-www-form-urlencoded" if route == "/v1/token" else None
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope("POST", route, body_type or b"application/json"), hang_up_after(b"{"), send)

    assert count(sqlite_state, listener, route, CLIENT_CLOSED) == 1
    assert count(sqlite_state, listener, route, 500) == 0


def test_the_default_public_cap_leaves_room_within_the_open_file_limit(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    settings = make_settings("sqlite://", tmp_path, database_pool_size=16)
    assert public_max_connections(settings) == 1024 - 64 - 16 - FD_RESERVE
    tiny = make_settings("sqlite://", tmp_path, admin_max_connections=2000)
    assert public_max_connections(tiny) == 32
    chosen = make_settings("sqlite://", tmp_path, max_connections=5000)
    assert public_max_connections(chosen) == 5000
