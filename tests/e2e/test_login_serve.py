"""People logging in to a real ``keyturn serve``: the tutorial's /login and /v1/login."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.serve_fixtures import KeyturnServer

Serve = Callable[..., KeyturnServer]
PASSWORD = "correct horse battery staple"


def test_a_user_logs_in_refreshes_and_logs_out(keyturn_server: Serve) -> None:
    """Production argon2 parameters, the migrated SQLite default, both listeners."""
    server = keyturn_server()
    with (
        httpx.Client(base_url=server.admin, timeout=10) as admin,
        httpx.Client(base_url=server.public, timeout=10) as public,
    ):
        created = admin.post(
            "/v1/admin/users", json={"email": "Alice@Example.com", "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]

        token = public.post(
            "/login", data={"email": "alice@example.com", "password": PASSWORD}
        ).json()["token"]
        checked = public.get("/v1/validate", headers={"Authorization": f"Bearer {token}"})
        assert checked.headers["X-Keyturn-Subject"] == f"user:{user_id}"
        wrong = public.post("/login", json={"email": "alice@example.com", "password": "nope!"})
        assert (wrong.status_code, wrong.json()["message"]) == (400, "Wrong credentials")

        tokens = public.post(
            "/v1/login", json={"email": "alice@example.com", "password": PASSWORD}
        ).json()
        refreshed = public.post(
            "/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
        assert refreshed.status_code == 200, refreshed.text
        latest = refreshed.json()["refresh_token"]
        assert public.post("/v1/logout", data={"refresh_token": latest}).status_code == 200
        again = public.post(
            "/v1/token", data={"grant_type": "refresh_token", "refresh_token": latest}
        )
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")

    assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log
    assert PASSWORD not in log
