"""The audit rows the service writes beside each state change (`audit_event`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyturn.core.records import AuditEvent

__all__ = ["audit_event"]


def audit_event(
    action: str,
    target_id: str | None,
    *,
    actor: str | None,
    request_id: str | None,
    at: datetime,
    outcome: str = "success",
    **detail: Any,
) -> AuditEvent:
    """The audit row for ``action`` (``"key.revoked"``) on ``target_id``.

    The target's type is the action's first word. ``detail`` never holds a secret: key
    ids, ``jti``s and ``kid``s only.
    """
    return AuditEvent(
        at=at,
        action=action,
        outcome=outcome,
        actor=actor,
        target_type=action.split(".", 1)[0],
        target_id=target_id,
        request_id=request_id,
        detail=detail,
    )
