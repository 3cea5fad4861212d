"""Concurrent calls of one hot PostgreSQL statement, sent as one statement.

Under load many requests reach the same step together: a burst of ``/authenticate``
calls all look their key up, then all store a refresh token. Each round trip to
PostgreSQL costs the server a ``send`` and a ``recv`` (tens of microseconds apiece on a
virtual machine) plus the driver's work, so `Batcher` sends the calls that arrive within
one turn of the event loop as one statement over arrays (``unnest``) and hands each
caller its own row.

The first caller of a turn leads: it yields once, so that the callers the event loop
runs next can join, then sends them all (alone it sends the single-row statement, so a
quiet server pays one loop turn and nothing else). The group is served by a task of its
own, so a caller that is cancelled never strands the others.

What a failure means for the group:

* The statement was refused before it changed anything on account of one member's
  values -- a constraint violation (`ConflictError`) or a value a bind processor
  refused (`sqlalchemy.exc.StatementError`) -- so each member is sent again on its own
  and gets its own answer.
* Anything else (the database unavailable, the connection lost mid-statement, a
  timeout) is every member's answer: it is the answer each would have had alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

import sqlalchemy as sa

from keyturn.errors import ConflictError

__all__ = ["MAX_BATCH", "Batcher"]

#: Most calls one statement carries; more callers in the same turn start another.
MAX_BATCH: Final = 64

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def _member_at_fault(exc: BaseException) -> bool:
    """Whether ``exc`` may be one member's doing and the statement changed nothing."""
    return isinstance(exc, ConflictError | sa.exc.StatementError)


class _Group(Generic[_Item, _Result]):
    __slots__ = ("futures", "items")

    def __init__(self, item: _Item, future: asyncio.Future[_Result]) -> None:
        self.items = [item]
        self.futures = [future]


class Batcher(Generic[_Item, _Result]):
    """Runs ``alone(item)`` per call, or ``together(items)`` for the calls of one turn.

    ``together`` returns one result per item, in order.
    """

    __slots__ = ("_alone", "_groups", "_pending", "_together", "groups_sent")

    def __init__(
        self,
        alone: Callable[[_Item], Awaitable[_Result]],
        together: Callable[[list[_Item]], Awaitable[Sequence[_Result]]],
    ) -> None:
        self._alone = alone
        self._together = together
        self._pending: _Group[_Item, _Result] | None = None
        self._groups: set[asyncio.Task[None]] = set()  # strong references while they run
        #: Statements sent for more than one call (for tests and curiosity).
        self.groups_sent = 0

    async def __call__(self, item: _Item) -> _Result:
        """``item``'s result, sent alone or with the calls that arrive in the same turn."""
        future: asyncio.Future[_Result] = asyncio.get_running_loop().create_future()
        pending = self._pending
        if pending is not None and len(pending.items) < MAX_BATCH:
            pending.items.append(item)
            pending.futures.append(future)
            return await future
        group = _Group(item, future)
        self._pending = group
        try:
            await asyncio.sleep(0)  # one turn: the callers scheduled next may join
        except BaseException:
            self._close(group)
            if len(group.items) > 1:  # serve the others without the cancelled leader
                del group.items[0], group.futures[0]
                self._start(group)
            raise
        self._close(group)
        if len(group.items) == 1:
            return await self._alone(item)
        self._start(group)
        return await future

    def _close(self, group: _Group[_Item, _Result]) -> None:
        if self._pending is group:
            self._pending = None

    def _start(self, group: _Group[_Item, _Result]) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(group))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _serve(self, group: _Group[_Item, _Result]) -> None:
        try:
            if len(group.items) == 1:
                results: Sequence[_Result] = [await self._alone(group.items[0])]
            else:
                self.groups_sent += 1
                results = await self._together(group.items)
        except Exception as exc:
            if _member_at_fault(exc):
                await self._one_by_one(group)
            else:
                for future in group.futures:
                    _settle(future, exc)
        else:
            for future, result in zip(group.futures, results, strict=True):
                _settle(future, result)
        finally:
            for future in group.futures:  # cancelled mid-way: nobody waits for ever
                if not future.done():
                    future.cancel()

    async def _one_by_one(self, group: _Group[_Item, _Result]) -> None:
        for item, future in zip(group.items, group.futures, strict=True):
            if future.done():  # its caller was cancelled
                continue
            try:
                result = await self._alone(item)
            except Exception as exc:
                _settle(future, exc)
            else:
                _settle(future, result)


def _settle(future: asyncio.Future[_Result], outcome: _Result | Exception) -> None:
    """Give ``future`` its result or exception, unless its caller stopped waiting."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
