"""Records and helpers shared by the storage tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import sqlalchemy as sa

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    RefreshTokenRecord,
    SigningKeyRecord,
    SigningKeyState,
    UserRecord,
)
from keyturn.storage.engine import autocommit
from keyturn.storage.sql import SQLStorage
from keyturn.testing import InMemoryStorage

#: The `InMemoryStorage` collection that holds each table's rows.
_IN_MEMORY = {
    "api_keys": "keys",
    "refresh_tokens": "refresh_tokens",
    "users": "users",
    "signing_keys": "signing_keys",
    "revoked_tokens": "revoked_tokens",
    "audit_events": "audit",
    "server_settings": "settings",
    "client_public_keys": "client_keys",
    "replay_guard": "replays",
}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


def hash_of(name: str) -> bytes:
    """A stand-in for the HMAC of a secret called ``name`` (32 bytes)."""
    return hashlib.sha256(name.encode()).digest()


def api_key(key_id: str = "k1", **fields: Any) -> ApiKeyRecord:
    """A key with hash ``hash_of(key_id)`` created at NOW, overridable field by field."""
    values: dict[str, Any] = {
        "id": key_id,
        "key_hash": hash_of(key_id),
        "created_at": NOW,
        "identifier": "svc",
    }
    return ApiKeyRecord(**(values | fields))


def refresh_token(record_id: str = "t1", **fields: Any) -> RefreshTokenRecord:
    """A rotating token of family ``f1`` for key ``k1``, expiring 30 days after NOW."""
    values: dict[str, Any] = {
        "id": record_id,
        "family_id": "f1",
        "token_hash": hash_of(record_id),
        "subject": "key:k1",
        "scope": ("read",),
        "created_at": NOW,
        "expires_at": LATER,
        "key_id": "k1",
        "identifier": "svc",
    }
    return RefreshTokenRecord(**(values | fields))


def signing_key(
    kid: str = "kid1", state: SigningKeyState = SigningKeyState.PENDING, **fields: Any
) -> SigningKeyRecord:
    """A signing key record with a dummy JWK and sealed blob."""
    values: dict[str, Any] = {
        "kid": kid,
        "alg": "ES256",
        "public_jwk": {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": kid},
        "sealed_private_key": b"sealed:" + kid.encode(),
        "state": state,
        "created_at": NOW,
        "activated_at": NOW if state is SigningKeyState.ACTIVE else None,
    }
    return SigningKeyRecord(**(values | fields))


def event(action: str, target_id: str | None = None, **fields: Any) -> AuditEvent:
    """An audit event at NOW."""
    return AuditEvent(at=fields.pop("at", NOW), action=action, target_id=target_id, **fields)


async def count_rows(storage: SQLStorage | InMemoryStorage, table: sa.Table) -> int:
    """How many rows ``table`` holds (in memory: how many records stand for its rows)."""
    if isinstance(storage, InMemoryStorage):
        return len(getattr(storage._tables, _IN_MEMORY[table.name]))
    async with autocommit(storage.engine).connect() as conn:
        query = sa.select(sa.func.count()).select_from(table)
        return int((await conn.execute(query)).scalar_one())


async def audit_actions(storage: SQLStorage) -> list[str]:
    """The actions of every audit row, oldest first."""
    return [stored.event.action for stored in reversed(await storage.audit.list(limit=1000))]


def user(user_id: str = "u1", email: str = "Alice@Example.com", **fields: Any) -> UserRecord:
    """A user created at NOW with a stand-in password hash."""
    values: dict[str, Any] = {
        "id": user_id,
        "email": email,
        "email_key": email.casefold(),
        "password_hash": f"$argon2id$stand-in-for-{user_id}",
        "created_at": NOW,
        "roles": ("reader",),
        "scopes": ("read",),
    }
    return UserRecord(**(values | fields))


async def end_other_sessions(database_url: str) -> None:
    """End every other session on ``database_url``'s database, as a server restart would."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
