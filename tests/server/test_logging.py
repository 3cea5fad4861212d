"""T-LOG-01 (server part): a full flow at DEBUG on every logger leaks no secret.

Every record is searched for each API key, refresh token and JWT (and a JWT's signature
segment), in plain, URL-encoded and base64 forms, and for the server's own secrets.
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import httpx
import pytest

from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock

from .conftest import (
    ADMIN_TOKEN,
    IDENTIFIER,
    KEK,
    LEGACY_KEY,
    OTHER_IDENTIFIER,
    PEPPER,
    REMOTE,
    MakeClient,
    OpenState,
    bearer,
)


def forms(secret: str) -> set[str]:
    """The ways a secret could be spelled in a log line."""
    raw = secret.encode()
    return {
        secret,
        quote(secret, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


@pytest.fixture
async def logged_state(open_state: OpenState, database_url: str) -> KeyturnState:
    """A state with an admin token, so the admin-token path runs too, and refresh tokens
    for keys, so the refresh grant's paths run."""
    return await open_state(
        database_url,
        admin_token=ADMIN_TOKEN,
        rate_limit_per_address=40,
        client_credentials_refresh_tokens=True,
    )


async def run_full_flow(
    public: httpx.AsyncClient, admin: httpx.AsyncClient, clock: FakeClock
) -> list[str]:
    """Every token path, good and bad; returns every secret that crossed the wire."""
    secrets = [LEGACY_KEY, ADMIN_TOKEN]
    legacy_body = {"key": LEGACY_KEY, "identifier": IDENTIFIER}
    assert (await admin.post("/register_key", json=legacy_body)).status_code == 201
    assert (
        await admin.post("/register_key", json={**legacy_body, "identifier": OTHER_IDENTIFIER})
    ).status_code == 409
    await admin.post("/is_key_registered", json={"key": LEGACY_KEY})
    legacy = (await public.post("/authenticate", json=legacy_body)).json()
    secrets += [legacy["jwt"], legacy["refresh_token"]]
    refreshed = await public.post(
        "/refresh", json={"refresh_token": legacy["refresh_token"], "identifier": IDENTIFIER}
    )
    secrets.append(refreshed.json()["jwt"])
    await public.post("/validate", json={"jwt": legacy["jwt"]})
    await public.get("/validate_request", headers=bearer(legacy["jwt"]))

    created = (await admin.post("/v1/admin/keys", json={"scopes": ["read"]})).json()
    key, key_id = created["key"], created["record"]["id"]
    secrets.append(key)
    rotated = (await admin.post(f"/v1/admin/keys/{key_id}/rotate", json={})).json()
    secrets.append(rotated["key"])
    token = (
        await public.post(
            "/v1/token", data={"grant_type": "client_credentials"}, auth=(rotated["key"], "")
        )
    ).json()
    secrets += [token["access_token"], token["refresh_token"]]
    client = (key_id, rotated["key"])
    second = (
        await public.post(
            "/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
            auth=client,
        )
    ).json()
    secrets += [second["access_token"], second["refresh_token"]]
    await public.get("/v1/validate?scope=read", headers=bearer(second["access_token"]))
    await public.get("/v1/validate?scope=admin", headers=bearer(second["access_token"]))
    await public.post(
        "/v1/introspect", data={"token": second["access_token"]}, headers=bearer(ADMIN_TOKEN)
    )
    clock.advance(11)
    reused = await public.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=client,
    )
    assert reused.json()["error"] == "invalid_grant"  # reuse detected: family revoked
    # Client authentication failures: a wrong secret, no credentials, another id.
    for auth in ((key_id, key), None, ("no-such-client", rotated["key"])):
        await public.post(
            "/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
            auth=auth,
        )
        await public.post("/v1/revoke", data={"token": second["refresh_token"]}, auth=auth)

    # Bad-token and bad-key paths: JWThenticator logged the whole token here.
    tampered = token["access_token"][:-4] + "AAAA"
    secrets.append(tampered)
    await public.post("/validate", json={"jwt": tampered})
    await public.get("/validate_request", headers=bearer(tampered))
    await public.get("/v1/validate", headers=bearer(token["refresh_token"]))
    await public.post(
        "/authenticate", json={"key": LEGACY_KEY + "-wrong", "identifier": IDENTIFIER}
    )
    await public.post("/authenticate", json={"key": LEGACY_KEY, "identifier": OTHER_IDENTIFIER})
    await public.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(key[:-2], ""))
    await public.post(
        "/v1/token", data={"grant_type": "client_credentials", "client_secret": key}, auth=(key, "")
    )
    await public.post(
        "/authenticate",
        content=b'{"key": "' + LEGACY_KEY.encode() + b'", "identifier": "x"',
        headers={"content-type": "application/json"},
    )
    await public.post(
        "/v1/introspect", data={"token": token["access_token"]}, headers=bearer(ADMIN_TOKEN[:-1])
    )
    await public.post("/v1/revoke", data={"token": second["access_token"]})
    await public.post("/v1/revoke", data={"token": legacy["refresh_token"]})
    await admin.post(f"/v1/admin/keys/{key_id}/revoke", json={"reason": "flow"})
    await admin.get("/v1/admin/audit")
    return secrets


async def test_no_secret_reaches_any_log_record(
    logged_state: KeyturnState,
    make_client: MakeClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    public = make_client(build_public_app(logged_state), peer=REMOTE)
    admin = make_client(build_admin_app(logged_state), headers=bearer(ADMIN_TOKEN))
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):  # SQLAlchemy sets its own to WARNING
        if logging.getLogger(name).level > logging.DEBUG:
            caplog.set_level(logging.DEBUG, logger=name)

    secrets = await run_full_flow(public, admin, clock)

    records = caplog.records
    assert any(r.name.startswith("sqlalchemy.engine") for r in records), "no SQL was logged"
    haystack = caplog.text + "\n".join(repr(vars(record)) for record in records)
    needles = {form for secret in secrets for form in forms(secret)}
    for jwt in (s for s in secrets if s.count(".") == 2):
        needles.add(jwt.rsplit(".", 1)[1])
    for value in (KEK, PEPPER):
        needles |= forms(value)
    leaked = sorted(needle for needle in needles if needle in haystack)
    assert leaked == []
