"""Call a protected service with tokens from Keyturn, using ``keyturn.client``.

Try it: paste this into bash at the repository's root (``curl``). It starts Keyturn,
creates a key that may ask for ``read``, and runs this script with it::

    export KEYTURN_URL=${KEYTURN_URL:-http://localhost:8080}  # where Keyturn listens
    keyturn serve &                       # data in ./.keyturn; or run it in another terminal
    until curl -fso /dev/null "$KEYTURN_URL/healthz"; do sleep 0.2; done  # wait until ready
    KEY=$(keyturn keys create --name script --scope read --json |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
    KEYTURN_API_KEY=$KEY python3 examples/client_script.py
    kill %1; wait                         # stop Keyturn

Among Keyturn's log lines it prints::

    async GET /v1/validate: 200
    subject: key:...
    refresh token rotated: True
    refresh token saved: True
    sync GET /v1/validate: 200
    refresh token saved: True
    httpx.Client(auth=KeyturnAuth) GET: 200

The "protected service" is Keyturn's own ``GET /v1/validate``, the check a gateway makes,
so nothing else needs to run. The script trades the key for a token, renews it, saves
the rotating refresh token to a file (``KEYTURN_REFRESH_TOKEN_FILE``, default
``.keyturn-refresh-token``, mode 0600) and starts a second client from that file alone,
as a process restarted without its key would. ``tests/examples/test_recipes.py`` runs
this recipe.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from keyturn.client import AsyncClient, Client, ClientError, KeyturnAuth


def save_refresh_token(path: Path) -> Callable[[str | None], None]:
    """``on_refresh_token``: keep the newest refresh token where only we can read it."""

    def save(token: str | None) -> None:
        if token is None:  # Keyturn refused it: forget it
            path.unlink(missing_ok=True)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token)

    return save


async def with_the_key(url: str, key: str, store: Path) -> None:
    async with AsyncClient(url, api_key=key, on_refresh_token=save_refresh_token(store)) as client:
        response = await client.get(f"{url}/v1/validate")
        print("async GET /v1/validate:", response.status_code)
        print("subject:", response.headers["X-Keyturn-Subject"].split(":")[0] + ":...")
        first = client.refresh_token
        await client.access_token(force=True)  # renew now (normally: at 80 % of the lifetime)
        print("refresh token rotated:", client.refresh_token != first)
        print("refresh token saved:", store.read_text() == client.refresh_token)


def from_the_saved_refresh_token(url: str, store: Path) -> None:
    save = save_refresh_token(store)
    with Client(url, refresh_token=store.read_text(), on_refresh_token=save) as client:
        print("sync GET /v1/validate:", client.get(f"{url}/v1/validate").status_code)
        print("refresh token saved:", store.read_text() == client.refresh_token)

    # The same, with KeyturnAuth on a plain httpx client.
    auth = KeyturnAuth(url, refresh_token=store.read_text(), on_refresh_token=save)
    with httpx.Client(auth=auth) as http:
        print("httpx.Client(auth=KeyturnAuth) GET:", http.get(f"{url}/v1/validate").status_code)


def main() -> int:
    url = os.environ.get("KEYTURN_URL", "http://localhost:8080").rstrip("/")
    key = os.environ["KEYTURN_API_KEY"]
    store = Path(os.environ.get("KEYTURN_REFRESH_TOKEN_FILE", ".keyturn-refresh-token"))
    try:
        asyncio.run(with_the_key(url, key, store))
        from_the_saved_refresh_token(url, store)
    except ClientError as exc:  # typed, and the message says what to do
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
