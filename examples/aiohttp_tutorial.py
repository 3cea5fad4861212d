r"""The classic aiohttp + PyJWT tutorial app, with Keyturn doing the hard parts.

The tutorial has four pieces: ``POST /login`` checks an email and a password and answers
``{"token": ...}`` (a JWT it signs with a shared secret), an ``auth_middleware`` that
decodes the ``Authorization`` header and sets ``request.user``, a ``login_required``
decorator, and ``GET /get-user``, which answers the user as JSON. Here:

* ``POST /login`` forwards the email and password to Keyturn's ``POST /login`` and
  answers Keyturn's ``{"token": ...}``; a failure is relayed as Keyturn gave it (400 with
  the tutorial's ``{"message": "Wrong credentials"}``, 429 + ``Retry-After``). Password
  hashing, the common-password list, throttling and signing stay in Keyturn; the app never
  stores a password.

  Why forward rather than have clients call Keyturn's ``/login`` themselves: it keeps the
  tutorial's shape (one origin, the same route and answers, clients unchanged), and the
  app sees the email next to the token it gets back, so it can keep its own user record
  (``PROFILES``) keyed by the token's subject. The app sends the client's address in
  ``X-Forwarded-For``: Keyturn trusts that header from ``KEYTURN_FORWARDED_ALLOW_IPS``
  (default ``127.0.0.1``), so its login throttle counts each client, not the app as one.
* ``auth_middleware(verifier, user_loader=load_user)`` verifies the bearer token and puts
  the user in ``request["user"]`` (the tutorial's ``request.user``; aiohttp wants request
  data in the request's mapping). ``load_user`` maps the subject ``user:<id>`` to the
  app's record; a token for an API key (``key:<id>``) or an unknown user is refused (401).
* ``@login_required`` guards ``GET /get-user``; ``@require_scopes("notes:read")`` guards
  ``GET /notes`` (403 ``insufficient_scope`` without it).

Revocation. ``--verify jwks`` (the default) verifies tokens locally against Keyturn's
``/.well-known/jwks.json``: no round trip per request, but no way to learn that a token
was revoked, so a user disabled in Keyturn keeps access until their token expires (15
minutes by default); they cannot log in again. ``--verify remote`` uses
``RemoteVerifier``, which asks Keyturn's ``/v1/validate`` about every request: disabling
the user (or ``POST /v1/revoke``) takes effect at once, at the cost of that round trip.

Try it: paste this into bash at the repository's root (``pip install 'keyturn[aiohttp]'``;
``curl``). It starts Keyturn, adds a user who may read notes, starts this app on port
8000, logs in through it and calls it (the app's defaults match ``keyturn serve``'s own:
Keyturn at ``http://localhost:8080``, issuer the same, audience ``keyturn``)::

    export KEYTURN_URL=${KEYTURN_URL:-http://localhost:8080}  # where Keyturn listens
    export KEYTURN_ISSUER=$KEYTURN_URL    # the tokens' iss: Keyturn and this app agree
    APP=http://localhost:${SERVICE_PORT:-8000}
    keyturn serve &                       # data in ./.keyturn; or run it in another terminal
    until curl -fso /dev/null "$KEYTURN_URL/healthz"; do sleep 0.2; done  # wait until ready
    PASSWORD='alice chose this passphrase'  # or: keyturn users add prompts for one
    printf '%s\n' "$PASSWORD" |
      keyturn users add alice@example.com --scope notes:read --password-stdin >/dev/null
    python3 examples/aiohttp_tutorial.py --allow-insecure-http --port "${SERVICE_PORT:-8000}" &
    until curl -so /dev/null "$APP/get-user"; do sleep 0.2; done  # any answer: it is up
    TOKEN=$(curl -fsS -d email=alice@example.com --data-urlencode "password=$PASSWORD" \
            "$APP/login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
    for ROUTE in /get-user /notes; do
      curl -so /dev/null -w "GET $ROUTE: %{http_code}\n" -H "Authorization: Bearer $TOKEN" \
        "$APP$ROUTE"
    done
    kill %2 %1; wait                      # stop the app and Keyturn

Among the servers' log lines it prints::

    GET /get-user: 200
    GET /notes: 200

``tests/examples/test_recipes.py`` runs this recipe.

Settings: ``--keyturn-url`` (``KEYTURN_URL``), ``--jwks-url`` (``KEYTURN_JWKS_URL``;
default ``<keyturn-url>/.well-known/jwks.json``), ``--issuer`` (``KEYTURN_ISSUER``),
``--audience`` (``KEYTURN_AUDIENCE``), ``--verify jwks|remote``, ``--allow-insecure-http``
(``ALLOW_INSECURE_HTTP=1``), ``--host``, ``--port``. ``keyturn serve`` ignores the
client-side ``KEYTURN_URL`` and ``KEYTURN_JWKS_URL``, so both can share one shell.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx
from aiohttp import web

from keyturn.errors import KeyturnError, VerifierUnavailableError
from keyturn.integrations.aiohttp import (
    auth_middleware,
    get_user,
    login_required,
    require_scopes,
)
from keyturn.verify import JWKSVerifier, RemoteVerifier, VerifiedToken, Verifier

#: ``keyturn serve``'s defaults (``KEYTURN_ISSUER``, ``KEYTURN_AUDIENCE``, port 8080).
DEFAULT_KEYTURN_URL = "http://localhost:8080"
DEFAULT_ISSUER = "http://localhost:8080"
DEFAULT_AUDIENCE = "keyturn"
#: Seconds a call to Keyturn's /login may take.
LOGIN_TIMEOUT = 10.0
#: Keyturn headers worth passing on to the client with a failed login.
RELAYED_HEADERS = ("Content-Type", "Retry-After", "Cache-Control")


@dataclass(frozen=True, slots=True)
class TutorialConfig:
    """Where Keyturn is and what its tokens say."""

    keyturn_url: str = DEFAULT_KEYTURN_URL
    jwks_url: str | None = None  # None: <keyturn_url>/.well-known/jwks.json
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    verify: Literal["jwks", "remote"] = "jwks"
    allow_insecure_http: bool = False  # http:// URLs, for a Keyturn on localhost only

    @property
    def login_url(self) -> str:
        return f"{self.keyturn_url.rstrip('/')}/login"

    @property
    def resolved_jwks_url(self) -> str:
        return self.jwks_url or f"{self.keyturn_url.rstrip('/')}/.well-known/jwks.json"


@dataclass(frozen=True, slots=True)
class User:
    """The app's own record of a person; Keyturn holds the password."""

    id: str
    email: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "email": self.email}


SUBJECT_PREFIX = "user:"
CONFIG = web.AppKey("config", TutorialConfig)
HTTP = web.AppKey("http", httpx.AsyncClient)
VERIFIER = web.AppKey("verifier", Verifier)
#: subject ("user:<id>") -> User. A real app keeps these in its database.
PROFILES = web.AppKey("profiles", dict[str, User])


async def load_user(request: web.Request, claims: VerifiedToken) -> User | None:
    """The tutorial's ``User.objects.get(id=payload['user_id'])``; None refuses (401)."""
    if not claims.subject.startswith(SUBJECT_PREFIX):
        return None  # an API key's token speaks for a program, not a person
    return request.app[PROFILES].get(claims.subject)


async def _credentials(request: web.Request) -> dict[str, str] | None:
    """The form (as the tutorial reads it) or JSON body's email and password."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
    else:
        body = await request.post()
    return {
        name: value for name in ("email", "password") if isinstance(value := body.get(name), str)
    }


async def login(request: web.Request) -> web.Response:
    """``POST /login``: Keyturn checks the password; the answer is its ``{"token": ...}``."""
    credentials = await _credentials(request)
    if credentials is None:
        return web.json_response({"message": "send a form or a JSON object"}, status=400)
    config = request.app[CONFIG]
    headers = {"X-Forwarded-For": request.remote} if request.remote else {}
    try:
        answer = await request.app[HTTP].post(
            config.login_url, data=credentials, headers=headers, timeout=LOGIN_TIMEOUT
        )
    except httpx.TransportError:
        return web.json_response(
            {"message": "the login service is unavailable"},
            status=503,
            headers={"Retry-After": "5"},
        )
    if answer.status_code != 200:
        relayed = {name: answer.headers[name] for name in RELAYED_HEADERS if name in answer.headers}
        return web.Response(body=answer.content, status=answer.status_code, headers=relayed)
    token: str = answer.json()["token"]
    try:
        claims = await request.app[VERIFIER].verify(token)  # learn the subject, and trust it
    except VerifierUnavailableError as exc:
        return web.json_response(
            {"message": "the login service is unavailable"},
            status=503,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except KeyturnError:  # Keyturn's own token refused: --issuer or --audience is wrong
        return web.json_response({"message": "the login service is misconfigured"}, status=502)
    user = User(claims.subject.removeprefix(SUBJECT_PREFIX), credentials["email"])
    request.app[PROFILES][claims.subject] = user
    return web.json_response({"token": token}, headers={"Cache-Control": "no-store"})


@login_required
async def get_user_handler(request: web.Request) -> web.Response:
    """``GET /get-user``: the tutorial's answer, the user as JSON."""
    user: User = get_user(request)
    return web.json_response({"user": user.to_json()})


@require_scopes("notes:read")
async def notes(request: web.Request) -> web.Response:
    """``GET /notes``: only for tokens with the ``notes:read`` scope."""
    return web.json_response({"notes": [], "for": get_user(request).email})


def make_verifier(config: TutorialConfig, client: httpx.AsyncClient) -> Verifier:
    """A `JWKSVerifier` (local, cached keys) or a `RemoteVerifier` (asks Keyturn each time)."""
    if config.verify == "remote":
        return RemoteVerifier(
            config.keyturn_url, client=client, allow_insecure_http=config.allow_insecure_http
        )
    return JWKSVerifier(
        config.resolved_jwks_url,
        issuer=config.issuer,
        audience=config.audience,
        client=client,
        allow_insecure_http=config.allow_insecure_http,
    )


def create_app(
    config: TutorialConfig, *, profiles: dict[str, User] | None = None
) -> web.Application:
    """The tutorial app; ``profiles`` (subject -> User) may be shared between apps."""
    client = httpx.AsyncClient()
    verifier = make_verifier(config, client)

    async def http_client(app: web.Application) -> AsyncIterator[None]:
        yield
        await client.aclose()  # the verifiers borrow this client: nothing else to close

    app = web.Application(middlewares=[auth_middleware(verifier, user_loader=load_user)])
    app[CONFIG] = config
    app[HTTP] = client
    app[VERIFIER] = verifier
    app[PROFILES] = {} if profiles is None else profiles
    app.cleanup_ctx.append(http_client)
    app.add_routes(
        [
            web.post("/login", login),
            web.get("/get-user", get_user_handler),
            web.get("/notes", notes),
        ]
    )
    return app


def parse_config(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[TutorialConfig, str, int]:
    """The configuration, host and port from the command line, then the environment."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyturn-url", default=environ.get("KEYTURN_URL", DEFAULT_KEYTURN_URL))
    parser.add_argument("--jwks-url", default=environ.get("KEYTURN_JWKS_URL"))
    parser.add_argument("--issuer", default=environ.get("KEYTURN_ISSUER", DEFAULT_ISSUER))
    parser.add_argument("--audience", default=environ.get("KEYTURN_AUDIENCE", DEFAULT_AUDIENCE))
    parser.add_argument("--verify", choices=["jwks", "remote"], default="jwks")
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=environ.get("ALLOW_INSECURE_HTTP") == "1",
        help="accept http:// Keyturn URLs (a Keyturn on localhost only)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    config = TutorialConfig(
        keyturn_url=args.keyturn_url,
        jwks_url=args.jwks_url,
        issuer=args.issuer,
        audience=args.audience,
        verify=args.verify,
        allow_insecure_http=args.allow_insecure_http,
    )
    return config, args.host, args.port


if __name__ == "__main__":
    tutorial, host, port = parse_config(sys.argv[1:], os.environ)
    web.run_app(create_app(tutorial), host=host, port=port)
