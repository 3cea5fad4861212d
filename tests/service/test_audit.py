"""The service's audit trail (`keyturn.service.audit`), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from keyturn.service import KeyturnService
from keyturn.service.audit import audit_event
from keyturn.storage.base import Storage

IDENTIFIER = str(uuid.UUID(int=7))


async def test_every_state_change_is_audited_without_secrets(
    service: KeyturnService, storage: Storage
) -> None:
    created = await service.create_key(name="audited")
    await service.register_key("legacy-secret-value", IDENTIFIER)
    pair = await service.authenticate(created.secret)
    assert pair.refresh_token is not None
    second = await service.refresh(pair.refresh_token)
    rotated = await service.rotate_key(created.record.id)
    await service.revoke_key(created.record.id, reason="done")

    events = await storage.audit.list(limit=100)

    actions = [e.event.action for e in reversed(events)]
    assert actions == [
        "server_setting.claimed",
        "signing_key.created",
        "key.created",
        "key.registered",
        "token.issued",
        "token.refreshed",
        "key.rotated",
        "key.revoked",
    ]
    text = repr([e.event for e in events])
    secrets = [
        created.secret,
        rotated.secret,
        "legacy-secret-value",
        pair.refresh_token,
        second.refresh_token,
        pair.access.token,
        second.access.token,
    ]
    for secret in secrets:
        assert secret is not None
        assert secret not in text
        assert secret.rsplit(".", 1)[-1] not in text


def test_an_audit_event_takes_its_context_by_keyword() -> None:
    """`audit_event` names actor, request id and time, so no two can be swapped."""
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    event = audit_event("key.revoked", "k1", actor="admin", request_id="r1", at=at, reason="x")

    assert (event.target_type, event.target_id, event.actor, event.request_id, event.at) == (
        "key",
        "k1",
        "admin",
        "r1",
        at,
    )
    assert (event.outcome, event.detail) == ("success", {"reason": "x"})
    with pytest.raises(TypeError):
        audit_event("key.revoked", "k1", "admin", "r1", at)  # type: ignore[misc]
