r"""An aiohttp service that verifies Keyturn tokens locally, against the issuer's JWKS.

``auth_middleware`` verifies every request's bearer token and stores the claims in
``request["claims"]`` and the caller's account in ``request["user"]`` (resolved by
``load_user``); ``@login_required`` and ``@require_scopes`` guard the handlers. No call
to Keyturn per request: the JWKS is fetched once and cached.

The service knows one account, ``acme`` (``ACCOUNT_IDENTIFIER``): a token is let in only
if its key was created with that identifier. Try it: paste this into bash at the
repository's root (``pip install 'keyturn[aiohttp]'``; ``curl``). It starts Keyturn,
creates the key the service expects (identifier ``acme``, scope ``orders:read``), trades
it for a token, starts this service on port 8000 and calls it::

    export KEYTURN_URL=${KEYTURN_URL:-http://localhost:8080}  # where Keyturn listens
    export KEYTURN_ISSUER=$KEYTURN_URL    # the tokens' iss: Keyturn and this service agree
    SERVICE=http://localhost:${SERVICE_PORT:-8000}
    keyturn serve &                       # data in ./.keyturn; or run it in another terminal
    until curl -fso /dev/null "$KEYTURN_URL/healthz"; do sleep 0.2; done  # wait until ready
    KEY=$(keyturn keys create --name acme-orders --identifier acme --scope orders:read \
          --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
    TOKEN=$(curl -fsS -u ":$KEY" -d grant_type=client_credentials "$KEYTURN_URL/v1/token" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
    ALLOW_INSECURE_HTTP=1 python3 examples/aiohttp_service.py &   # http: for localhost only
    until curl -fso /dev/null "$SERVICE/health"; do sleep 0.2; done
    call() {  # METHOD PATH [TOKEN]: print what the service answers
      curl -so /dev/null -w "$1 $2: %{http_code}\n" -X "$1" "$SERVICE$2" \
        ${3:+-H "Authorization: Bearer $3"}
    }
    call GET /me                          # no token
    call GET /me "$TOKEN"
    call GET /orders "$TOKEN"
    call POST /orders "$TOKEN"
    kill %2 %1; wait                      # stop the service and Keyturn

Among the servers' log lines it prints (the token has ``orders:read``, not
``orders:write``)::

    GET /me: 401
    GET /me: 200
    GET /orders: 200
    POST /orders: 403

Keyturn elsewhere (another port, behind a proxy)? Set ``KEYTURN_URL`` to the URL this
service reaches it at, and ``KEYTURN_ISSUER`` to the same value **for Keyturn too**: a
token is accepted only from the exact issuer (``KEYTURN_ISSUER``, default
``http://localhost:8080`` whatever port Keyturn listens on). ``KEYTURN_AUDIENCE``
likewise. ``tests/examples/test_recipes.py`` runs this recipe.
"""

import os
from dataclasses import dataclass

from aiohttp import web

from keyturn.integrations.aiohttp import (
    auth_middleware,
    get_claims,
    get_user,
    login_required,
    require_scopes,
)
from keyturn.verify import JWKSVerifier, VerifiedToken


@dataclass(frozen=True)
class Account:
    """Who the caller is in this service's own terms."""

    name: str
    plan: str


ACCOUNTS = web.AppKey("accounts", dict)


async def load_user(request: web.Request, claims: VerifiedToken) -> Account | None:
    """Find the account a token speaks for; None refuses the request (401)."""
    accounts: dict[str, Account] = request.app[ACCOUNTS]
    return accounts.get(claims.identifier or "")


async def health(request: web.Request) -> web.Response:
    claims = get_claims(request)  # None: an anonymous request, allowed here
    return web.json_response({"ok": True, "caller": claims.subject if claims else None})


@login_required
async def me(request: web.Request) -> web.Response:
    claims: VerifiedToken = request["claims"]
    account: Account = get_user(request)
    return web.json_response(
        {"subject": claims.subject, "account": account.name, "scopes": sorted(claims.scopes)}
    )


@require_scopes("orders:read")
async def list_orders(request: web.Request) -> web.Response:
    return web.json_response({"orders": [], "for": request["user"].name})


@require_scopes("orders:write")
async def create_order(request: web.Request) -> web.Response:
    return web.json_response({"created": True}, status=201)


def create_app(
    keyturn_url: str,
    *,
    issuer: str,
    audience: str,
    accounts: dict[str, Account],
    allow_insecure_http: bool = False,
) -> web.Application:
    """The service; ``accounts`` maps a key's registered identifier to its account."""
    verifier = JWKSVerifier(
        f"{keyturn_url.rstrip('/')}/.well-known/jwks.json",
        issuer=issuer,
        audience=audience,
        allow_insecure_http=allow_insecure_http,
    )

    async def close_verifier(app: web.Application) -> None:
        await verifier.aclose()

    app = web.Application(middlewares=[auth_middleware(verifier, user_loader=load_user)])
    app[ACCOUNTS] = accounts
    app.on_cleanup.append(close_verifier)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/me", me),
            web.get("/orders", list_orders),
            web.post("/orders", create_order),
        ]
    )
    return app


if __name__ == "__main__":
    url = os.environ.get("KEYTURN_URL", "http://localhost:8080")
    service = create_app(
        url,
        issuer=os.environ.get("KEYTURN_ISSUER", url),
        audience=os.environ.get("KEYTURN_AUDIENCE", "keyturn"),
        accounts={os.environ.get("ACCOUNT_IDENTIFIER", "acme"): Account("Acme", "gold")},
        allow_insecure_http=os.environ.get("ALLOW_INSECURE_HTTP") == "1",  # local only
    )
    web.run_app(service, port=int(os.environ.get("SERVICE_PORT", "8000")))
