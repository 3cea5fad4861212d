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
    renewed: True
    refresh token issued: False
    sync GET /v1/validate: 200
    httpx.Client(auth=KeyturnAuth) GET: 200

The "protected service" is Keyturn's own ``GET /v1/validate``, the check a gateway makes,
so nothing else needs to run. The script trades the key for a token and renews it. By
default Keyturn gives key clients no refresh token (RFC 6749 §4.4.3): the client renews
with its key. A server with ``KEYTURN_CLIENT_CREDENTIALS_REFRESH_TOKENS=true`` issues
rotating refresh tokens, which the script saves to a file (mode 0600) and a second client
redeems, together with the key they are bound to, as a restarted process would.
``tests/examples/test_recipes.py`` runs the recipe above.
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
        first = await client.access_token()
        refresh_token = client.refresh_token
        await client.access_token(force=True)  # renew now (normally: at 80 % of the lifetime)
        print("renewed:", await client.access_token() != first)
        print("refresh token issued:", refresh_token is not None)
        if refresh_token is not None:
            print("refresh token rotated:", client.refresh_token != refresh_token)
            print("refresh token saved:", store.read_text() == client.refresh_token)


def after_a_restart(url: str, key: str, store: Path) -> None:
    save = save_refresh_token(store)
    saved = store.read_text() if store.exists() else None
    with Client(url, api_key=key, refresh_token=saved, on_refresh_token=save) as client:
        print("sync GET /v1/validate:", client.get(f"{url}/v1/validate").status_code)
        if saved is not None:
            print("refresh token saved:", store.read_text() == client.refresh_token)

    # The same, with KeyturnAuth on a plain httpx client.
    saved = store.read_text() if store.exists() else None
    auth = KeyturnAuth(url, api_key=key, refresh_token=saved, on_refresh_token=save)
    with httpx.Client(auth=auth) as http:
        print("httpx.Client(auth=KeyturnAuth) GET:", http.get(f"{url}/v1/validate").status_code)


def main() -> int:
    url = os.environ.get("KEYTURN_URL", "http://localhost:8080").rstrip("/")
    key = os.environ["KEYTURN_API_KEY"]
    store = Path(os.environ.get("KEYTURN_REFRESH_TOKEN_FILE", ".keyturn-refresh-token"))
    try:
        asyncio.run(with_the_key(url, key, store))
        after_a_restart(url, key, store)
    except ClientError as exc:  # typed, and the message says what to do
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
