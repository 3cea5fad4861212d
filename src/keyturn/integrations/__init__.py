"""Framework integrations: protect aiohttp, Starlette and FastAPI routes with Keyturn tokens.

* `keyturn.integrations.aiohttp` (extra ``keyturn[aiohttp]``): ``@authenticate``,
  ``auth_middleware``, ``@login_required``, ``@require_scopes``.
* `keyturn.integrations.starlette`: ``KeyturnBackend`` for Starlette's
  ``AuthenticationMiddleware``, and FastAPI dependencies (extra ``keyturn[fastapi]``).

Each takes a `keyturn.verify.Verifier` and answers failures as RFC 6750 §3 describes.
"""

from __future__ import annotations

__all__: list[str] = []
