"""The Keyturn HTTP server (Starlette on uvicorn): public and admin listeners."""

from __future__ import annotations

from keyturn.server.app import build_admin_app, build_public_app, create_app
from keyturn.server.state import KeyturnState

__all__ = ["KeyturnState", "build_admin_app", "build_public_app", "create_app"]
