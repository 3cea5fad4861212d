"""One way to open a Redis client (the optional ``keyturn[redis]`` extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["connect_redis"]


def connect_redis(url: str, *, timeout: float, needed_by: str) -> Any:
    """A lazily connecting ``redis.asyncio`` client whose calls time out after ``timeout`` s.

    Raises:
        RuntimeError: the ``redis`` package is missing; ``needed_by`` names the setting
            that asked for it.
    """
    try:
        import redis.asyncio as redis  # noqa: PLC0415 -- optional dependency
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(f"{needed_by} needs the extra: pip install 'keyturn[redis]'") from exc
    return redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
