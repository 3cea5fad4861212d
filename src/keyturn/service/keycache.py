"""API-key records kept in memory between requests: `KeyCache` and `KeyUsage` (issue 19).

A client that trades its key for a token every few seconds would otherwise have its key
looked up in the database on every request, and its use (``last_used_at``) written.

* `KeyCache` keeps the record found for a key's peppered hash for at most
  ``ServiceConfig.key_cache_ttl`` (the server sets it to ``KEYTURN_POLL_INTERVAL``, the
  bound within which every instance honours a revocation made on another). A record
  older than that is read again; so a key rotated or renewed on another instance (or by
  the CLI) is seen within that bound, and at once on the instance that changed it
  (`KeyCache.forget`). Revocation and expiry do not wait for it: the statement that
  records an issuance (`AuditRepository.record_issuance`, `RefreshTokenRepository.add`)
  writes nothing for a key revoked or expired in the database, and the request is
  refused. Only keys found are kept (an unknown secret costs a lookup every time, so
  guessing cannot fill memory), at most `MAX_CACHED_KEYS` of them, the oldest dropped
  first. Whether a cached key may authenticate now (revoked, expired, identifier) is
  also decided per request from the record, as for a record just read.
* `KeyUsage` keeps each key's latest use in memory and writes it at most once per
  ``last_used_resolution`` per key, in batches (`KeyUsage.flush`: the server's poll, its
  shutdown, and any request that finds the oldest unwritten use older than the
  resolution). ``last_used_at`` is informational; a crash loses at most the uses not yet
  flushed, never an acknowledged write of anything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from keyturn.core.records import ApiKeyRecord

if TYPE_CHECKING:
    from keyturn.storage.base import KeyRepository

__all__ = ["MAX_CACHED_KEYS", "KeyCache", "KeyUsage"]

#: Most key records kept at once; beyond it the oldest entry is dropped.
MAX_CACHED_KEYS: Final = 10_000


class KeyCache:
    """Key records by the peppered hash they were found under, each for at most ``ttl``."""

    __slots__ = ("_entries", "_max", "_ttl")

    def __init__(self, ttl: timedelta, *, max_entries: int = MAX_CACHED_KEYS) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[bytes, tuple[ApiKeyRecord, datetime]] = {}

    @property
    def enabled(self) -> bool:
        """False when ``ttl`` is zero: every lookup reads the database."""
        return self._ttl > timedelta(0)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: bytes, now: datetime) -> ApiKeyRecord | None:
        """The record found for ``key_hash`` less than ``ttl`` before ``now``, or None."""
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        record, loaded_at = entry
        if not loaded_at <= now < loaded_at + self._ttl:  # stale, or the clock went back
            del self._entries[key_hash]
            return None
        # The dictionary found the entry by its hash; check it as the database lookup does
        # (`statements.FIND_KEY_BY_HASH`), comparing in constant time: the current hash,
        # or the previous one while its grace runs.
        if hmac.compare_digest(record.key_hash, key_hash):
            return record
        previous, until = record.previous_hash, record.previous_expires_at
        in_grace = previous is not None and until is not None and now < until
        if in_grace and hmac.compare_digest(previous or b"", key_hash):
            return record
        # Found under another hash (an imported key whose stored hash is still its
        # legacy one) or out of grace: read it again.
        del self._entries[key_hash]
        return None

    def put(self, key_hash: bytes, record: ApiKeyRecord, now: datetime) -> None:
        """Keep ``record``, found for ``key_hash`` at ``now``."""
        if not self.enabled:
            return
        entries = self._entries
        entries.pop(key_hash, None)
        while len(entries) >= self._max:
            del entries[next(iter(entries))]  # the oldest
        entries[key_hash] = (record, now)

    def forget(self, key_id: str) -> None:
        """Drop every entry of key ``key_id`` (revoked, rotated, renewed on this instance)."""
        stale = [key_hash for key_hash, (record, _) in self._entries.items() if record.id == key_id]
        for key_hash in stale:
            del self._entries[key_hash]

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()


class KeyUsage:
    """Each key's latest use, written to ``last_used_at`` at most once per ``resolution``."""

    __slots__ = ("_flushing", "_oldest", "_pending", "_resolution", "_written")

    def __init__(self, resolution: timedelta) -> None:
        self._resolution = resolution
        self._written: dict[str, datetime] = {}  # what this instance last wrote, per key
        self._pending: dict[str, datetime] = {}  # uses not written yet, per key
        self._oldest: datetime | None = None  # when the oldest pending use was noted
        self._flushing: asyncio.Lock | None = None

    @property
    def pending(self) -> int:
        """Keys whose latest use is not written yet."""
        return len(self._pending)

    def note(self, record: ApiKeyRecord, now: datetime) -> bool:
        """Note a use of ``record`` at ``now``; True when a flush is due (see `flush`).

        A use within ``resolution`` of the last one written (by this instance, or stored
        in the record) is not written again.
        """
        key_id = record.id
        last = self._written.get(key_id, record.last_used_at)
        if record.last_used_at is not None and last is not None:
            last = max(last, record.last_used_at)
        if last is None or now - last >= self._resolution:
            if key_id not in self._pending:
                if self._oldest is None:
                    self._oldest = now
                if len(self._written) > 4 * MAX_CACHED_KEYS:  # bounded: forget old writes
                    self._written.clear()
            self._pending[key_id] = now
        oldest = self._oldest
        return oldest is not None and now - oldest >= self._resolution

    def latest(self, record: ApiKeyRecord) -> ApiKeyRecord:
        """``record`` with the use noted here and not written yet, if it is later."""
        pending = self._pending.get(record.id)
        if pending is None or (record.last_used_at is not None and record.last_used_at >= pending):
            return record
        return dataclasses.replace(record, last_used_at=pending)

    async def flush(self, keys: KeyRepository) -> int:
        """Write the pending uses (one statement per key); the number written.

        A use whose write fails stays pending for the next flush, unless a later one
        replaced it; the error is raised after the others were tried.
        """
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            pending, self._pending, self._oldest = self._pending, {}, None
            failure: Exception | None = None
            written = 0
            for key_id, at in pending.items():
                try:
                    await keys.mark_used(key_id, at=at)
                except Exception as exc:  # kept for the next flush, re-raised
                    failure = failure or exc
                    if key_id not in self._pending:
                        self._pending[key_id] = at
                        self._oldest = self._oldest or at
                    continue
                self._written[key_id] = at
                written += 1
            if failure is not None:
                raise failure
            return written
