"""Argon2 off the event loop: `PasswordWorker`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar

from keyturn.core.passwords import PasswordHasher

__all__ = ["PasswordWorker", "default_password_concurrency"]

_T = TypeVar("_T")


def default_password_concurrency() -> int:
    """Half the CPUs, at least one: argon2 never takes every core from the event loop."""
    return max(1, (os.cpu_count() or 2) // 2)


class PasswordWorker:
    """Runs argon2 in worker threads, at most ``concurrency`` at a time.

    Each verification holds 19 MiB and ~40 ms of a core. Off the event loop, a login
    flood queues here while token validation, which never waits on this, keeps being
    served; the cap bounds both the memory and the cores a flood can take.
    """

    def __init__(self, hasher: PasswordHasher, *, concurrency: int | None = None) -> None:
        self.hasher = hasher
        self.concurrency = concurrency or default_password_concurrency()
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(self.concurrency)

    async def run(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run ``work(*args)`` in a thread once a slot is free."""
        async with self._slots:
            return await asyncio.to_thread(work, *args)
