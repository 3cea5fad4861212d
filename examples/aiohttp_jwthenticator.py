r"""An aiohttp service guarded exactly as with JWThenticator: every request asks /validate.

Migrating from JWThenticator is one import: ``jwthenticator.server_utils.authenticate``
becomes ``keyturn.integrations.aiohttp.authenticate``; the answers stay the same (403
without a header, 400 for a malformed one, 401 for a refused token).

Try it with JWThenticator's own flow (register a key on the admin listener, trade it at
``/authenticate``): paste this into bash at the repository's root (``pip install
'keyturn[aiohttp]'``; ``curl``)::

    export KEYTURN_URL=${KEYTURN_URL:-http://localhost:8080}  # where Keyturn listens
    KT_ADMIN=${KT_ADMIN:-http://127.0.0.1:8081}               # its admin listener
    SERVICE=http://localhost:${SERVICE_PORT:-8000}
    keyturn serve &                       # data in ./.keyturn; or run it in another terminal
    until curl -fso /dev/null "$KEYTURN_URL/healthz"; do sleep 0.2; done  # wait until ready
    KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
    ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
    BODY="{\"key\": \"$KEY\", \"identifier\": \"$ID\"}"
    curl -fsS -o /dev/null "$KT_ADMIN/register_key" -H 'Content-Type: application/json' -d "$BODY"
    JWT=$(curl -fsS "$KEYTURN_URL/authenticate" -H 'Content-Type: application/json' -d "$BODY" |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["jwt"])')
    python3 examples/aiohttp_jwthenticator.py &
    until curl -fso /dev/null "$SERVICE/insecure"; do sleep 0.2; done
    call() {  # PATH [TOKEN]: print what the service answers
      curl -so /dev/null -w "GET $1: %{http_code}\n" "$SERVICE$1" \
        ${2:+-H "Authorization: Bearer $2"}
    }
    call /insecure
    call /secure                          # no header: 403, as JWThenticator answers
    call /secure "$JWT"
    kill %2 %1; wait                      # stop the service and Keyturn

Among the servers' log lines it prints::

    GET /insecure: 200
    GET /secure: 403
    GET /secure: 200

``tests/examples/test_recipes.py`` runs this recipe.
"""

import os

from aiohttp import web

from keyturn.integrations.aiohttp import authenticate


def create_app(keyturn_url: str) -> web.Application:
    """The JWThenticator example service: ``/insecure`` is open, ``/secure`` is not."""

    async def insecure(request: web.Request) -> web.Response:
        return web.json_response({"success!": True})

    @authenticate(keyturn_url)
    async def secure(request: web.Request) -> web.Response:
        return web.json_response({"success!": True})

    app = web.Application()
    app.add_routes([web.get("/insecure", insecure), web.get("/secure", secure)])
    return app


if __name__ == "__main__":
    url = os.environ.get("KEYTURN_URL", "http://localhost:8080")
    web.run_app(create_app(url), port=int(os.environ.get("SERVICE_PORT", "8000")))
