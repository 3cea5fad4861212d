"""Records <-> rows: the values a record is stored as, and the record a row reads back as.

Rows are read by position: `API_KEY_COLUMNS`, `REFRESH_TOKEN_COLUMNS` and `USER_COLUMNS` fix
the order that `api_key_record`, `refresh_token_record` and `user_record` unpack.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    RefreshTokenRecord,
    SigningKeyRecord,
    SigningKeyState,
    UserRecord,
)
from keyturn.storage.base import StoredAuditEvent
from keyturn.storage.tables import (
    api_keys,
    refresh_tokens,
    users,
)

__all__ = [
    "API_KEY_COLUMNS",
    "AUDIT_FIELDS",
    "REFRESH_TOKEN_COLUMNS",
    "REFRESH_TOKEN_FIELDS",
    "USER_COLUMNS",
    "USER_FIELDS",
    "api_key_record",
    "api_key_values",
    "audit_params",
    "new_token_params",
    "refresh_token_record",
    "signing_key_record",
    "signing_key_values",
    "stored_audit_event",
    "user_record",
    "user_values",
]


API_KEY_COLUMNS: Final = tuple(
    api_keys.c[name]
    for name in (
        "id",
        "key_hash",
        "identifier",
        "name",
        "roles",
        "scopes",
        "extra_claims",
        "metadata",
        "legacy",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_reason",
        "previous_hash",
        "previous_expires_at",
        "dpop_required",
    )
)
REFRESH_TOKEN_FIELDS: Final = (
    "id",
    "family_id",
    "parent_id",
    "token_hash",
    "subject",
    "scope",
    "rotating",
    "key_id",
    "user_id",
    "identifier",
    "created_at",
    "expires_at",
    "used_at",
    "replaced_by",
    "revoked_at",
    "dpop_jkt",
)
REFRESH_TOKEN_COLUMNS: Final = tuple(refresh_tokens.c[name] for name in REFRESH_TOKEN_FIELDS)
AUDIT_FIELDS: Final = (
    "at",
    "action",
    "outcome",
    "actor",
    "target_type",
    "target_id",
    "request_id",
    "detail",
)


def api_key_values(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "key_hash": key.key_hash,
        "identifier": key.identifier,
        "name": key.name,
        "roles": list(key.roles),
        "scopes": None if key.scopes is None else list(key.scopes),
        "extra_claims": dict(key.extra_claims),
        "metadata": dict(key.metadata),
        "legacy": key.legacy,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "revoked_reason": key.revoked_reason,
        "previous_hash": key.previous_hash,
        "previous_expires_at": key.previous_expires_at,
        "dpop_required": key.dpop_required,
    }


def api_key_record(row: Sequence[Any]) -> ApiKeyRecord:
    """The record for a row of `API_KEY_COLUMNS`."""
    (
        key_id,
        key_hash,
        identifier,
        name,
        roles,
        scopes,
        extra_claims,
        metadata,
        legacy,
        created_at,
        expires_at,
        last_used_at,
        revoked_at,
        revoked_reason,
        previous_hash,
        previous_expires_at,
        dpop_required,
    ) = row
    return ApiKeyRecord(
        id=key_id,
        key_hash=bytes(key_hash),
        created_at=created_at,
        identifier=identifier,
        name=name,
        roles=tuple(roles),
        scopes=None if scopes is None else tuple(scopes),
        extra_claims=extra_claims,
        metadata=metadata,
        legacy=bool(legacy),
        expires_at=expires_at,
        last_used_at=last_used_at,
        revoked_at=revoked_at,
        revoked_reason=revoked_reason,
        previous_hash=None if previous_hash is None else bytes(previous_hash),
        previous_expires_at=previous_expires_at,
        dpop_required=bool(dpop_required),
    )


def new_token_params(token: RefreshTokenRecord) -> dict[str, Any]:
    """Values for the ``new_*`` parameters of `NEW_TOKEN`."""
    return {
        "new_id": token.id,
        "new_family_id": token.family_id,
        "new_parent_id": token.parent_id,
        "new_token_hash": token.token_hash,
        "new_subject": token.subject,
        "new_scope": list(token.scope),
        "new_rotating": token.rotating,
        "new_key_id": token.key_id,
        "new_user_id": token.user_id,
        "new_identifier": token.identifier,
        "new_created_at": token.created_at,
        "new_expires_at": token.expires_at,
        "new_used_at": token.used_at,
        "new_replaced_by": token.replaced_by,
        "new_revoked_at": token.revoked_at,
        "new_dpop_jkt": token.dpop_jkt,
    }


def refresh_token_record(row: Sequence[Any]) -> RefreshTokenRecord:
    """The record for a row of `REFRESH_TOKEN_COLUMNS`."""
    (
        token_id,
        family_id,
        parent_id,
        token_hash,
        subject,
        scope,
        rotating,
        key_id,
        user_id,
        identifier,
        created_at,
        expires_at,
        used_at,
        replaced_by,
        revoked_at,
        dpop_jkt,
    ) = row
    return RefreshTokenRecord(
        id=token_id,
        family_id=family_id,
        token_hash=bytes(token_hash),
        subject=subject,
        scope=tuple(scope),
        created_at=created_at,
        expires_at=expires_at,
        rotating=bool(rotating),
        parent_id=parent_id,
        key_id=key_id,
        user_id=user_id,
        identifier=identifier,
        used_at=used_at,
        replaced_by=replaced_by,
        revoked_at=revoked_at,
        dpop_jkt=dpop_jkt,
    )


def signing_key_values(key: SigningKeyRecord) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "public_jwk": dict(key.public_jwk),
        "sealed_private_key": key.sealed_private_key,
        "state": SigningKeyState(key.state).value,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retired_at": key.retired_at,
        "publish_until": key.publish_until,
    }


def signing_key_record(row: sa.RowMapping) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=row["kid"],
        alg=row["alg"],
        public_jwk=row["public_jwk"],
        sealed_private_key=bytes(row["sealed_private_key"]),
        state=SigningKeyState(row["state"]),
        created_at=row["created_at"],
        activated_at=row["activated_at"],
        retired_at=row["retired_at"],
        publish_until=row["publish_until"],
    )


def audit_params(event: AuditEvent) -> dict[str, Any]:
    """Values for the ``audit_*`` parameters of `AUDIT`."""
    return {
        "audit_at": event.at,
        "audit_action": event.action,
        "audit_outcome": event.outcome,
        "audit_actor": event.actor,
        "audit_target_type": event.target_type,
        "audit_target_id": event.target_id,
        "audit_request_id": event.request_id,
        "audit_detail": dict(event.detail),
    }


def stored_audit_event(row: sa.RowMapping) -> StoredAuditEvent:
    event = AuditEvent(
        at=row["at"],
        action=row["action"],
        outcome=row["outcome"],
        actor=row["actor"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        request_id=row["request_id"],
        detail=row["detail"],
    )
    return StoredAuditEvent(id=int(row["id"]), event=event)


USER_FIELDS: Final = (
    "id",
    "email",
    "email_key",
    "password_hash",
    "roles",
    "scopes",
    "created_at",
    "disabled_at",
    "disabled_reason",
    "tokens_revoked_at",
    "password_changed_at",
    "last_login_at",
    "failed_logins",
    "last_failed_login_at",
)
USER_COLUMNS: Final = tuple(users.c[name] for name in USER_FIELDS)


def user_values(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "email_key": user.email_key,
        "password_hash": user.password_hash,
        "roles": list(user.roles),
        "scopes": None if user.scopes is None else list(user.scopes),
        "created_at": user.created_at,
        "disabled_at": user.disabled_at,
        "disabled_reason": user.disabled_reason,
        "tokens_revoked_at": user.tokens_revoked_at,
        "password_changed_at": user.password_changed_at,
        "last_login_at": user.last_login_at,
        "failed_logins": user.failed_logins,
        "last_failed_login_at": user.last_failed_login_at,
    }


def user_record(row: Sequence[Any]) -> UserRecord:
    """The record for a row of `USER_COLUMNS`."""
    values = dict(zip(USER_FIELDS, row, strict=True))
    values["roles"] = tuple(values["roles"])
    values["scopes"] = None if values["scopes"] is None else tuple(values["scopes"])
    values["failed_logins"] = int(values["failed_logins"])
    return UserRecord(**values)
