"""Compatibility fixtures: a real ``keyturn serve`` for clients of other packages."""

from __future__ import annotations

from tests.serve_fixtures import keyturn_server

__all__ = ["keyturn_server"]
