"""The rows of an `InMemoryStorage`, and what its repositories share."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    ClientPublicKeyRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
    UserRecord,
)
from keyturn.errors import ConflictError
from keyturn.storage.base import StoredAuditEvent

__all__ = ["Repository", "Tables", "page", "replace", "utc"]

_R = TypeVar("_R")
_D = TypeVar("_D")


def utc(record: _D) -> _D:
    """``record`` with its times in UTC, as a database gives them back (the same instants)."""
    times = {
        field.name: value.astimezone(UTC)
        for field in dataclasses.fields(record)  # type: ignore[arg-type]
        if isinstance(value := getattr(record, field.name), datetime)
    }
    return dataclasses.replace(record, **times) if times else record  # type: ignore[type-var]


def replace(record: _D, **changes: object) -> _D:
    """``dataclasses.replace``, times in UTC."""
    return utc(dataclasses.replace(record, **changes))  # type: ignore[type-var]


class Tables:
    """Every aggregate's rows, shared by the repositories of one `InMemoryStorage`."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyRecord] = {}
        self.refresh_tokens: dict[str, RefreshTokenRecord] = {}
        self.users: dict[str, UserRecord] = {}
        self.signing_keys: dict[str, SigningKeyRecord] = {}
        self.revoked_tokens: dict[str, datetime] = {}
        self.settings: dict[str, str] = {}
        self.client_keys: dict[tuple[str, str], ClientPublicKeyRecord] = {}
        self.replays: dict[str, datetime] = {}
        self.audit: list[StoredAuditEvent] = []

    def record(self, event: AuditEvent) -> None:
        self.audit.append(StoredAuditEvent(id=len(self.audit) + 1, event=event))

    def revoke_tokens(
        self, at: datetime, *, key_id: str | None = None, user_id: str | None = None
    ) -> None:
        """Revoke the live refresh tokens of an API key or a user."""
        for token in builtins.list(self.refresh_tokens.values()):
            mine = token.key_id == key_id if key_id is not None else token.user_id == user_id
            if mine and token.revoked_at is None:
                self.refresh_tokens[token.id] = replace(token, revoked_at=at)

    def deny(self, jti: str, expires_at: datetime) -> bool:
        """Refuse ``jti`` until ``expires_at`` (or later); whether anything changed."""
        stored = self.revoked_tokens.get(jti)
        if stored is not None and stored >= expires_at:
            return False
        self.revoked_tokens[jti] = expires_at.astimezone(UTC)
        return True

    def check_new_key(self, key: ApiKeyRecord) -> None:
        if key.id in self.keys or self.key_with_hash(key.key_hash) is not None:
            raise ConflictError("cannot store the API key: it clashes with a stored record")

    def key_with_hash(self, key_hash: bytes) -> ApiKeyRecord | None:
        return next((k for k in self.keys.values() if k.key_hash == key_hash), None)


def page(records: Iterable[_R], key: str, after: str | None, limit: int) -> list[_R]:
    ordered = sorted(records, key=lambda record: getattr(record, key))
    return [r for r in ordered if after is None or getattr(r, key) > after][:limit]


class Repository:
    def __init__(self, tables: Tables) -> None:
        self._tables = tables
