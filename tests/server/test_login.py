"""People logging in over HTTP: /login, /v1/login, /v1/logout and the admin users API."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyturn.core.passwords import PasswordHasher, PasswordParameters
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import REMOTE, MakeClient, bearer, create_key, make_settings

FAST = PasswordParameters(memory_cost=8, time_cost=1)
PASSWORD = "correct horse battery staple"
WRONG = "not the right passphrase"
VICTIM_ADDRESS = ("198.51.100.20", 5000)
ATTACKER = ("203.0.113.66", 6000)

OpenLoginState = Callable[..., Awaitable[KeyturnState]]


@pytest.fixture
async def open_login_state(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpenLoginState]:
    """Open states with cheap argon2 parameters (and given settings); closed at teardown."""
    opened: list[KeyturnState] = []

    async def open_(
        database_url: str, *, hasher: PasswordHasher | None = None, **overrides: Any
    ) -> KeyturnState:
        state = await KeyturnState.open(
            make_settings(database_url, tmp_path, **overrides),
            background=False,
            clock=clock,
            password_hasher=hasher or PasswordHasher(FAST),
        )
        opened.append(state)
        return state

    try:
        yield open_
    finally:
        for state in opened:
            await state.close()


@pytest.fixture
async def login_state(open_login_state: OpenLoginState, database_url: str) -> KeyturnState:
    """A state on each backend."""
    return await open_login_state(database_url)


@pytest.fixture
async def sqlite_login_state(
    open_login_state: OpenLoginState, sqlite_database_url: str
) -> KeyturnState:
    """A state on SQLite, for request-shape tests."""
    return await open_login_state(sqlite_database_url)


def clients(
    state: KeyturnState, make_client: MakeClient, peer: tuple[str, int] = REMOTE
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    return make_client(build_public_app(state), peer=peer), make_client(build_admin_app(state))


async def create_user(admin: httpx.AsyncClient, email: str, **body: Any) -> dict[str, Any]:
    response = await admin.post(
        "/v1/admin/users", json={"email": email, "password": PASSWORD, **body}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# -- POST /login (the tutorial's route) ----------------------------------------------------


@pytest.mark.parametrize("encoding", ["form", "json"])
async def test_login_returns_the_tutorial_token(
    sqlite_login_state: KeyturnState, make_client: MakeClient, encoding: str
) -> None:
    public, admin = clients(sqlite_login_state, make_client)
    user = await create_user(admin, "Alice@Example.com", scopes=["read"])
    credentials = {"email": "alice@example.com", "password": PASSWORD}

    if encoding == "form":
        response = await public.post("/login", data=credentials)
    else:
        response = await public.post("/login", json=credentials)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert list(body) == ["token"]
    checked = await public.get("/v1/validate", headers=bearer(body["token"]))
    assert checked.status_code == 200
    assert checked.headers["x-keyturn-subject"] == f"user:{user['id']}"
    assert checked.headers["x-keyturn-scope"] == "read"


async def test_wrong_credentials_answer_in_the_tutorials_words(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, admin = clients(sqlite_login_state, make_client)
    await create_user(admin, "alice@example.com")

    response = await public.post("/login", data={"email": "alice@example.com", "password": WRONG})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "the email or password is not valid",
        "error": "invalid_grant",
        "message": "Wrong credentials",
    }


@pytest.mark.parametrize("path", ["/login", "/v1/login"])
async def test_unknown_email_and_wrong_password_are_byte_identical(
    login_state: KeyturnState, make_client: MakeClient, path: str
) -> None:
    """ASVS 6.3.8: status, headers and body do not tell the two cases apart."""
    public, admin = clients(login_state, make_client)
    await create_user(admin, "alice@example.com")

    unknown = await public.post(path, data={"email": "nobody@example.com", "password": WRONG})
    wrong = await public.post(path, data={"email": "alice@example.com", "password": WRONG})

    assert unknown.status_code == wrong.status_code == 400
    # Every response carries its own X-Request-ID; nothing else may differ.
    assert _without_request_id(unknown.headers.raw) == _without_request_id(wrong.headers.raw)
    assert unknown.headers["x-request-id"] != wrong.headers["x-request-id"]
    assert unknown.content == wrong.content


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/login", {"email": "alice@example.com"}, id="login-no-password"),
        pytest.param("/login", {"password": PASSWORD}, id="login-no-email"),
        pytest.param("/v1/login", {"email": "", "password": PASSWORD}, id="v1-empty-email"),
    ],
)
async def test_missing_fields_are_a_bad_request(
    sqlite_login_state: KeyturnState, make_client: MakeClient, path: str, body: dict[str, str]
) -> None:
    public, _ = clients(sqlite_login_state, make_client)

    response = await public.post(path, data=body)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_a_json_body_of_non_strings_is_refused(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, _ = clients(sqlite_login_state, make_client)

    response = await public.post("/login", json={"email": ["a"], "password": 1})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


# -- POST /v1/login, refresh at /v1/token, POST /v1/logout ---------------------------------


async def test_v1_login_tokens_refresh_at_the_token_endpoint(
    login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, admin = clients(login_state, make_client)
    user = await create_user(admin, "alice@example.com", scopes=["read", "write"])

    login = await public.post(
        "/v1/login", data={"email": "alice@example.com", "password": PASSWORD, "scope": "read"}
    )
    assert login.status_code == 200, login.text
    body = login.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("Bearer", "read", 900)

    refreshed = await public.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )

    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != body["refresh_token"]
    checked = await public.get("/v1/validate", headers=bearer(refreshed.json()["access_token"]))
    assert checked.headers["x-keyturn-subject"] == f"user:{user['id']}"


async def test_a_scope_the_user_lacks_is_refused_in_a_users_words(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    """Finding 28: a person asking for a scope was told "not allowed for this key"."""
    public, admin = clients(sqlite_login_state, make_client)
    await create_user(admin, "alice@example.com", scopes=["read"])

    response = await public.post(
        "/v1/login", data={"email": "alice@example.com", "password": PASSWORD, "scope": "write"}
    )

    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")
    assert (
        response.json()["error_description"]
        == "claim 'scope': not allowed for this user and their roles (value 'write')"
    )


async def test_a_disabled_user_cannot_log_in_or_refresh(
    login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, admin = clients(login_state, make_client)
    user = await create_user(admin, "alice@example.com")
    tokens = (
        await public.post("/v1/login", data={"email": "alice@example.com", "password": PASSWORD})
    ).json()

    disabled = await admin.post(f"/v1/admin/users/{user['id']}/disable", json={"reason": "left"})
    assert disabled.status_code == 200
    assert disabled.json()["disabled_reason"] == "left"

    login = await public.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    refresh = await public.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    validate = await public.get("/v1/validate", headers=bearer(tokens["access_token"]))
    assert (login.status_code, login.json()["error"]) == (400, "invalid_grant")
    assert (refresh.status_code, refresh.json()["error"]) == (400, "invalid_grant")
    assert validate.status_code == 401


async def test_logout_revokes_the_refresh_token_family(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, admin = clients(sqlite_login_state, make_client)
    await create_user(admin, "alice@example.com")
    tokens = (
        await public.post("/v1/login", json={"email": "alice@example.com", "password": PASSWORD})
    ).json()

    logout = await public.post("/v1/logout", data={"refresh_token": tokens["refresh_token"]})
    refresh = await public.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )

    assert (logout.status_code, logout.content) == (200, b"")
    assert refresh.status_code == 400
    again = await public.post("/v1/logout", data={"refresh_token": tokens["refresh_token"]})
    unknown = await public.post("/v1/logout", data={"refresh_token": "ktr_nothing"})
    missing = await public.post("/v1/logout", json={})
    assert (again.status_code, unknown.status_code) == (200, 200)
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    # RFC 7009 §2.1: the session's access tokens end with it.
    checked = await public.get("/v1/validate", headers=bearer(tokens["access_token"]))
    assert checked.status_code == 401


async def test_a_login_refresh_token_needs_no_client_and_refuses_a_key(
    login_state: KeyturnState, make_client: MakeClient
) -> None:
    """A person's refresh token is a public client's: no client authentication (RFC 6749
    §6); a key presenting it is not the client it was issued to (invalid_grant)."""
    public, admin = clients(login_state, make_client)
    await create_user(admin, "alice@example.com")
    key = await create_key(admin)
    tokens = (
        await public.post("/v1/login", data={"email": "alice@example.com", "password": PASSWORD})
    ).json()
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}

    as_key = await public.post("/v1/token", data=form, auth=(key["record"]["id"], key["key"]))
    revoke_as_key = await public.post(
        "/v1/revoke", data={"token": tokens["access_token"]}, auth=("", key["key"])
    )
    public_client = await public.post("/v1/token", data=form | {"client_id": "keyturn-login"})

    assert (as_key.status_code, as_key.json()["error"]) == (400, "invalid_grant")
    assert (revoke_as_key.status_code, revoke_as_key.json()["error"]) == (
        400,
        "unauthorized_client",
    )
    assert public_client.status_code == 200, public_client.text
    still = await public.get("/v1/validate", headers=bearer(tokens["access_token"]))
    assert still.status_code == 200


# -- throttling ----------------------------------------------------------------------------


async def test_a_login_flood_on_one_account_is_throttled_while_others_log_in(
    sqlite_login_state: KeyturnState, make_client: MakeClient, clock: FakeClock
) -> None:
    """ASVS 6.3.1 and 6.1.1: the flood is cut off; the victim and other accounts are not."""
    attacker, admin = clients(sqlite_login_state, make_client, peer=ATTACKER)
    victim = make_client(build_public_app(sqlite_login_state), peer=VICTIM_ADDRESS)
    await create_user(admin, "alice@example.com")
    await create_user(admin, "bob@example.com")
    guess = {"email": "alice@example.com", "password": WRONG}

    statuses = [(await attacker.post("/login", data=guess)).status_code for _ in range(12)]

    assert statuses == [400] * 10 + [429] * 2
    refused = await attacker.post("/login", data={**guess, "password": PASSWORD})
    assert refused.status_code == 429  # not even the right password gets checked now
    assert 1 <= int(refused.headers["retry-after"]) <= 300
    assert refused.json()["error"] == "rate_limited"
    own = await victim.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    other = await attacker.post("/login", data={"email": "bob@example.com", "password": PASSWORD})
    assert (own.status_code, other.status_code) == (200, 200)

    clock.advance(300)  # the window ends: no lockout outlives it

    assert (await attacker.post("/login", data=guess)).status_code == 400


async def test_a_distributed_flood_holds_an_account_only_for_its_window(
    open_login_state: OpenLoginState,
    sqlite_database_url: str,
    make_client: MakeClient,
    clock: FakeClock,
) -> None:
    state = await open_login_state(sqlite_database_url, login_rate_limit_per_account=5)
    _, admin = clients(state, make_client)
    await create_user(admin, "alice@example.com")
    guess = {"email": "alice@example.com", "password": WRONG}
    for n in range(5):
        bot = make_client(build_public_app(state), peer=(f"192.0.2.{n}", 1000))
        assert (await bot.post("/v1/login", data=guess)).status_code == 400
    owner = make_client(build_public_app(state), peer=VICTIM_ADDRESS)
    credentials = {"email": "alice@example.com", "password": PASSWORD}

    held = await owner.post("/v1/login", data=credentials)
    clock.advance(300)
    released = await owner.post("/v1/login", data=credentials)

    assert (held.status_code, held.json()["error"]) == (429, "rate_limited")
    assert "retry-after" in held.headers
    assert released.status_code == 200


async def test_unknown_emails_are_throttled_exactly_like_known_ones(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    """A 429 reveals nothing about which emails have accounts (ASVS 6.3.8)."""
    public, admin = clients(sqlite_login_state, make_client)
    await create_user(admin, "alice@example.com")

    known = [
        (await public.post("/login", data={"email": "alice@example.com", "password": WRONG}))
        for _ in range(11)
    ]
    unknown = [
        (await public.post("/login", data={"email": "nobody@example.com", "password": WRONG}))
        for _ in range(11)
    ]

    assert [r.status_code for r in known] == [r.status_code for r in unknown] == [400] * 10 + [429]


async def test_token_validation_is_served_while_argon2_is_busy(
    open_login_state: OpenLoginState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    """argon2 runs in a thread: a login stuck in it does not hold the event loop."""
    entered, release = threading.Event(), threading.Event()

    class StuckHasher(PasswordHasher):
        def verify(self, password_hash: str, password: str) -> bool:
            entered.set()
            release.wait(timeout=10)
            return super().verify(password_hash, password)

    release.set()  # the first login, which gets the token to validate, passes through
    state = await open_login_state(sqlite_database_url, hasher=StuckHasher(FAST))
    public, admin = clients(state, make_client)
    await create_user(admin, "alice@example.com")
    token = (
        await public.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    ).json()["token"]
    entered.clear()
    release.clear()

    login = asyncio.create_task(
        public.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    )
    await asyncio.wait_for(asyncio.to_thread(entered.wait, 5), timeout=5)
    checked = await public.get("/v1/validate", headers=bearer(token))

    assert checked.status_code == 200
    assert not login.done()
    release.set()
    assert (await login).status_code == 200


# -- the admin users API --------------------------------------------------------------------


async def test_admin_creates_lists_shows_and_changes_users(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, admin = clients(sqlite_login_state, make_client)
    created = await create_user(admin, "Alice@Example.com", roles=["default"], scopes=["read"])

    assert set(created) == {
        "id",
        "email",
        "roles",
        "scopes",
        "created_at",
        "disabled_at",
        "disabled_reason",
        "password_changed_at",
        "last_login_at",
        "failed_logins",
        "last_failed_login_at",
    }
    assert (created["email"], created["roles"], created["scopes"]) == (
        "Alice@Example.com",
        ["default"],
        ["read"],
    )
    listed = (await admin.get("/v1/admin/users")).json()
    shown = (await admin.get(f"/v1/admin/users/{created['id']}")).json()
    assert listed == {"users": [created], "next_after": None}
    assert shown == created

    changed = await admin.post(
        f"/v1/admin/users/{created['id']}/password", json={"password": "a brand new passphrase"}
    )
    assert changed.status_code == 200
    old = await public.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    new = await public.post(
        "/login", data={"email": "alice@example.com", "password": "a brand new passphrase"}
    )
    assert (old.status_code, new.status_code) == (400, 200)

    await admin.post(f"/v1/admin/users/{created['id']}/disable")
    enabled = await admin.post(f"/v1/admin/users/{created['id']}/enable")
    assert (enabled.status_code, enabled.json()["disabled_at"]) == (200, None)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        pytest.param({"email": "b@example.com", "password": "password1"}, 400, "invalid_request"),
        pytest.param({"email": "b@example.com", "password": "short"}, 400, "invalid_request"),
        pytest.param({"email": "no-at-sign", "password": PASSWORD}, 400, "invalid_request"),
        pytest.param({"email": "A@example.com", "password": PASSWORD}, 409, "conflict"),
        pytest.param({"email": "b@example.com"}, 400, "invalid_request"),
        pytest.param(
            {"email": "b@example.com", "password": PASSWORD, "is_admin": True},
            400,
            "invalid_request",
        ),
    ],
    ids=["common", "short", "bad-email", "duplicate", "no-password", "unknown-field"],
)
async def test_admin_refuses_bad_users(
    sqlite_login_state: KeyturnState,
    make_client: MakeClient,
    body: dict[str, Any],
    status: int,
    error: str,
) -> None:
    _, admin = clients(sqlite_login_state, make_client)
    await create_user(admin, "a@example.com")

    response = await admin.post("/v1/admin/users", json=body)

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.headers["content-type"] == "application/problem+json"
    if "password" in body:
        assert body["password"] not in response.text
    if error == "conflict":  # finding 19: the detail said "it clashes with a stored record"
        assert response.json()["detail"] == (
            "a user with this email already exists (emails ignore case)"
        )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/users/nope"),
        ("POST", "/v1/admin/users/nope/disable"),
        ("POST", "/v1/admin/users/nope/enable"),
    ],
)
async def test_admin_unknown_users_are_404(
    sqlite_login_state: KeyturnState, make_client: MakeClient, method: str, path: str
) -> None:
    _, admin = clients(sqlite_login_state, make_client)

    response = await admin.request(method, path)

    assert (response.status_code, response.json()["error"]) == (404, "not_found")


async def test_the_users_api_is_not_on_the_public_listener(
    sqlite_login_state: KeyturnState, make_client: MakeClient
) -> None:
    public, _ = clients(sqlite_login_state, make_client)

    response = await public.post("/v1/admin/users", json={"email": "a@b.c", "password": PASSWORD})

    assert response.status_code == 404


# -- passwords never reach logs or the audit trail -----------------------------------------


async def test_passwords_never_appear_in_logs_or_audit_rows(
    sqlite_login_state: KeyturnState, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    public, admin = clients(sqlite_login_state, make_client)
    new_password = "the replacement passphrase"
    user = await create_user(admin, "alice@example.com")
    await admin.post("/v1/admin/users", json={"email": "weak@example.com", "password": "password1"})
    await public.post("/login", data={"email": "alice@example.com", "password": PASSWORD})
    await public.post("/v1/login", json={"email": "alice@example.com", "password": WRONG})
    await public.post("/login", data={"email": "ghost@example.com", "password": WRONG})
    await admin.post(f"/v1/admin/users/{user['id']}/password", json={"password": new_password})

    audit = await admin.get("/v1/admin/audit", params={"limit": 1000})

    assert audit.status_code == 200
    actions = {event["action"] for event in audit.json()["events"]}
    assert {"user.created", "user.login", "user.login_failed", "user.password_changed"} <= actions
    assert caplog.records  # the flow did log (SQL, HTTP); none of it holds a password
    logged = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    for secret in (PASSWORD, WRONG, new_password, "password1"):
        assert secret not in logged
        assert secret not in audit.text
    # aiosqlite's DEBUG lines echo SQL parameters; every other logger keeps hashes out too.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("aiosqlite")]
    assert not [line for line in ours if "$argon2id$" in line]
    assert "$argon2id$" not in audit.text


def _without_request_id(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in raw if name.lower() != b"x-request-id"]
