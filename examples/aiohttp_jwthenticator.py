"""An aiohttp service guarded exactly as with JWThenticator: every request asks /validate.

Migrating from JWThenticator is one import: ``jwthenticator.server_utils.authenticate``
becomes ``keyturn.integrations.aiohttp.authenticate``; the answers stay the same (403
without a header, 400 for a malformed one, 401 for a refused token).

Run it next to a Keyturn (or JWThenticator) server::

    keyturn serve &
    KEYTURN_URL=http://localhost:8080 python examples/aiohttp_jwthenticator.py
    curl -H "Authorization: Bearer $JWT" http://localhost:8000/secure
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
    web.run_app(create_app(os.environ.get("KEYTURN_URL", "http://localhost:8080")), port=8000)
