"""Ending a refresh-token family, with its audit row: `RefreshFamilies`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from keyturn.core.records import RefreshTokenRecord
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext

__all__ = ["RefreshFamilies"]

#: Extra time a revoked family's access tokens stay refused (see `RefreshFamilies.deny_until`).
_FAMILY_DENY_MARGIN: Final = timedelta(minutes=1)


class RefreshFamilies:
    """Revokes a refresh token's whole family, here and in storage (RFC 7009 §2.1)."""

    def __init__(self, context: ServiceContext) -> None:
        self._context = context

    def deny_until(self, now: datetime) -> datetime:
        """How long a revoked family's entry must refuse its access tokens.

        Past the longest an access token lives and is accepted, with a minute's margin for
        one issued by a request that read the family just before it was revoked.
        """
        config = self._context.config
        return (
            now
            + config.access_token_lifetime
            + timedelta(seconds=config.leeway)
            + _FAMILY_DENY_MARGIN
        )

    async def revoke(
        self,
        token: RefreshTokenRecord,
        now: datetime,
        *,
        action: str,
        target_id: str | None,
        actor: str | None,
        request_id: str | None,
        outcome: str = "success",
        **detail: Any,
    ) -> int:
        """Revoke ``token``'s family and every access token issued from it.

        The audit row (``action`` on ``target_id``) names the family; returns how many
        refresh tokens were revoked (0 when the family already was).
        """
        until = self.deny_until(now)
        revoked = await self._context.storage.refresh_tokens.revoke_family(
            token.family_id,
            at=now,
            access_tokens_until=until,
            audit=audit_event(
                action,
                target_id,
                actor=actor,
                request_id=request_id,
                at=now,
                outcome=outcome,
                family_id=token.family_id,
                **detail,
            ),
        )
        self._context.revocations.revoke_family(token.family_id, until=int(until.timestamp()))
        return revoked
