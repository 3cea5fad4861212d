"""Two ``keyturn serve`` processes on one PostgreSQL database, as behind a load balancer.

They share only the database and the server secrets (``KEYTURN_KEK``,
``KEYTURN_PEPPER``), as docs/deployment.md prescribes. Each re-reads revocations and
signing keys every ``KEYTURN_POLL_INTERVAL`` seconds, turned down here so the checks of
that bound stay fast; every wait polls with a deadline.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.engine import URL

from keyturn.core.tokens import peek_unverified_claims
from keyturn.server.v1 import IDENTITY_HEADERS
from tests.serve_fixtures import KeyturnServer
from tests.storage_fixtures import (
    create_postgresql_database,
    drop_postgresql_database,
    run_in_own_loop,
)

pytestmark = pytest.mark.postgresql

#: KEYTURN_POLL_INTERVAL for these servers: the documented bound on cross-instance news.
POLL_INTERVAL = 0.25
#: KEYTURN_SIGNING_KEY_PUBLISH_DELAY: how long a new signing key is published unused.
PUBLISH_DELAY = 2
#: Room for a loaded two-core machine beyond the bound; a broken poll still fails.
SLACK = 3.0


def _secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@dataclass
class Pair:
    """Instances ``a`` and ``b`` of one deployment."""

    a: KeyturnServer
    b: KeyturnServer

    def create_key(self, **body: object) -> str:
        response = httpx.post(f"{self.a.admin}/v1/admin/keys", json=body, timeout=10)
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key


def token_from(server: KeyturnServer, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.public}/v1/token",
        data={"grant_type": "client_credentials"},
        auth=(key, ""),
        timeout=10,
    )


def access_token(server: KeyturnServer, key: str) -> str:
    response = token_from(server, key)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def validate_on(server: KeyturnServer, token: str) -> httpx.Response:
    return httpx.get(
        f"{server.public}/v1/validate", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def published_kids(server: KeyturnServer) -> set[str]:
    response = httpx.get(f"{server.public}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    return {jwk["kid"] for jwk in response.json()["keys"]}


def kid_of(token: str) -> str:
    kid: str = peek_unverified_claims(token)[0]["kid"]
    return kid


@pytest.fixture(scope="module")
def pair(postgresql_admin_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Two instances on a fresh database, with the same KEK and pepper and nothing else."""
    admin = postgresql_admin_url
    database = run_in_own_loop(lambda: create_postgresql_database(admin))
    shared = {
        "KEYTURN_DATABASE_URL": database.render_as_string(hide_password=False),
        "KEYTURN_KEK": _secret(),
        "KEYTURN_PEPPER": _secret(),
        "KEYTURN_POLL_INTERVAL": str(POLL_INTERVAL),
        "KEYTURN_SIGNING_KEY_PUBLISH_DELAY": str(PUBLISH_DELAY),
        "KEYTURN_RATE_LIMIT_ENABLED": "false",
    }
    home = tmp_path_factory.mktemp("instances")
    started: list[KeyturnServer] = []
    try:
        for name in ("a", "b"):
            env = {**shared, "KEYTURN_MIGRATE_ON_START": "true" if name == "a" else "false"}
            started.append(
                KeyturnServer.start(home / f"data-{name}", home / f"{name}.log", env=env)
            )
        yield Pair(*started)
        for server in started:
            assert server.stop() == 0
            assert "Traceback" not in server.log()
    finally:
        for server in started:
            server.kill()
        run_in_own_loop(lambda: drop_postgresql_database(admin, database))


def wait_until(check: Callable[[], bool], deadline: float, what: str) -> None:
    """Poll ``check`` until it holds; fail when ``deadline`` seconds pass first."""
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline} s")
        time.sleep(0.02)  # poll interval, not a wait for an event


def test_a_token_issued_by_one_instance_validates_on_the_other(pair: Pair) -> None:
    key = pair.create_key(identifier="svc-a", scopes=["read"])
    token = access_token(pair.a, key)

    response = validate_on(pair.b, token)

    assert response.status_code == 200
    assert response.headers[IDENTITY_HEADERS["identifier"]] == "svc-a"
    assert response.headers[IDENTITY_HEADERS["jti"]] == peek_unverified_claims(token)[1]["jti"]


def test_a_key_revoked_on_one_instance_is_refused_by_the_other_within_the_bound(
    pair: Pair,
) -> None:
    key = pair.create_key(name="to-revoke")
    token = access_token(pair.a, key)
    assert validate_on(pair.b, token).status_code == 200
    listed = httpx.get(f"{pair.a.admin}/v1/admin/keys", params={"limit": 1000}, timeout=10)
    found = [k for k in listed.json()["keys"] if k.get("name") == "to-revoke"]
    assert len(found) == 1

    revoked = httpx.post(
        f"{pair.a.admin}/v1/admin/keys/{found[0]['id']}/revoke", json={"reason": "test"}
    )
    assert revoked.status_code == 200, revoked.text
    wait_until(
        lambda: validate_on(pair.b, token).status_code == 401,
        POLL_INTERVAL + SLACK,
        "instance b still accepts a token of the revoked key",
    )

    assert token_from(pair.b, key).status_code == 401  # the key itself: read from the database
    assert validate_on(pair.a, token).status_code == 401


def test_a_rotated_signing_key_is_in_both_jwks_before_any_token_carries_it(pair: Pair) -> None:
    key = pair.create_key(name="rotation")
    old_kid = kid_of(access_token(pair.a, key))
    rotated = httpx.post(f"{pair.a.admin}/v1/admin/signing-keys/rotate", timeout=10)
    assert rotated.status_code == 201, rotated.text
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid

    published_on: set[str] = set()  # instances whose JWKS were seen with the new kid
    signed_by: dict[str, str] = {}  # instance -> first token that carried the new kid
    deadline = time.monotonic() + PUBLISH_DELAY + POLL_INTERVAL + SLACK
    while len(signed_by) < 2:
        assert time.monotonic() < deadline, f"the new key never signed: {signed_by}"
        for name, server in (("a", pair.a), ("b", pair.b)):
            if new_kid in published_kids(server):
                published_on.add(name)
        for name, server in (("a", pair.a), ("b", pair.b)):
            token = access_token(server, key)
            if kid_of(token) == new_kid:
                assert published_on == {"a", "b"}, "a token carried a kid not yet published"
                signed_by.setdefault(name, token)
            else:
                assert kid_of(token) == old_kid
        time.sleep(0.05)  # poll interval, not a wait for an event

    # Tokens signed by the new key validate on either instance, and so do the old key's.
    for token in signed_by.values():
        assert validate_on(pair.a, token).status_code == 200
        assert validate_on(pair.b, token).status_code == 200
    assert {old_kid, new_kid} <= published_kids(pair.a) == published_kids(pair.b)


def test_a_key_revoked_while_both_instances_issue_its_tokens_leaves_none_alive(
    pair: Pair,
) -> None:
    """Issue 18: authentications racing a revocation on two instances; none survives.

    Every token issued around the revocation is refused by both instances once the poll
    has run, and no request that started after the revocation returned gets a token.
    """
    created = httpx.post(f"{pair.a.admin}/v1/admin/keys", json={"name": "raced"}, timeout=10)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["record"]["id"]
    issued: list[tuple[float, str]] = []  # (request start, token)
    stop = threading.Event()

    def authenticate_until_stopped(server: KeyturnServer) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set() and len(issued) < 400:
                started = time.monotonic()
                response = client.post(
                    f"{server.public}/v1/token",
                    data={"grant_type": "client_credentials"},
                    auth=(key, ""),
                )
                if response.status_code == 200:
                    issued.append((started, response.json()["access_token"]))
                else:
                    assert response.status_code == 401, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        racers = [pool.submit(authenticate_until_stopped, s) for s in (pair.a, pair.b) * 4]
        wait_until(lambda: len(issued) >= 16, 30, "no tokens issued before the revocation")
        revoked = httpx.post(
            f"{pair.a.admin}/v1/admin/keys/{key_id}/revoke", json={"reason": "race"}, timeout=10
        )
        revoked_by = time.monotonic()
        assert revoked.status_code == 200, revoked.text
        stop.set()
        for racer in racers:
            racer.result()

    assert not [token for started, token in issued if started > revoked_by]
    tokens = [token for _, token in issued]
    for server in (pair.a, pair.b):
        wait_until(
            lambda server=server: validate_on(server, tokens[-1]).status_code == 401,
            POLL_INTERVAL + SLACK,
            "the last token of the revoked key still validates",
        )
        with httpx.Client(timeout=10) as client:
            statuses = {
                client.get(
                    f"{server.public}/v1/validate", headers={"Authorization": f"Bearer {t}"}
                ).status_code
                for t in tokens
            }
        assert statuses == {401}, "a token issued around the revocation still validates"
