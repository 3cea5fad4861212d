"""Pages of keys and users, ordered by id with an ``after`` cursor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from keyturn.errors import PolicyViolation

__all__ = ["fetch_page"]


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


_R = TypeVar("_R", bound=_HasId)


async def fetch_page(
    fetch: Callable[[int], Awaitable[Sequence[_R]]], limit: int
) -> tuple[list[_R], str | None]:
    """One page of at most ``limit`` rows, and the cursor of the next (None on the last).

    ``fetch(n)`` reads up to ``n`` rows; one more than the page is read to tell whether
    another page follows.

    Raises:
        PolicyViolation: ``limit`` is not between 1 and 1000.
    """
    if not 1 <= limit <= 1000:
        raise PolicyViolation("limit", limit, "must be between 1 and 1000")
    rows = await fetch(limit + 1)
    page = list(rows[:limit])
    return page, page[-1].id if len(rows) > limit else None
