"""The refresh-token grant: `RefreshGrant` (RFC 6749 §6, rotation per RFC 9700 §4.14.2).

A rotating token is replaced by a successor in its family at each use; presenting a
rotated-out token again after the grace window revokes the whole family. A legacy
(JWThenticator) token is reused instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Final

from keyturn.core.dpop import InvalidDPoPProofError
from keyturn.core.policy import Grant
from keyturn.core.records import ApiKeyRecord, RefreshTokenRecord, UserRecord
from keyturn.core.refresh import RefreshDecision, decide_refresh
from keyturn.core.tokens import IssuedToken
from keyturn.errors import (
    InvalidClientError,
    InvalidGrantError,
    MalformedSecretError,
    PolicyViolation,
)
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import Credentials
from keyturn.service.dpop import require_proof
from keyturn.service.families import RefreshFamilies
from keyturn.service.issuing import TokenIssuer, TokenPair

__all__ = ["RefreshGrant"]

# One message for every bad refresh token, so responses cannot tell the cases apart.
_BAD_REFRESH: Final = "the refresh token is not valid"
_CLIENT_REQUIRED: Final = (
    "this refresh token was issued to an API key: authenticate with that key "
    "(HTTP Basic or client_secret)"
)
_NOT_YOUR_REFRESH: Final = "the refresh token was not issued to the authenticated client"
_REFRESH_REFUSALS: Final = {
    RefreshDecision.EXPIRED: "expired_refresh_token",
    RefreshDecision.REVOKED: "revoked_refresh_token",
    RefreshDecision.REPLAY_IN_GRACE: "refresh_token_replayed",
}


class RefreshGrant:
    """Trades refresh tokens for new access tokens (and rotating ones for successors)."""

    def __init__(
        self,
        context: ServiceContext,
        credentials: Credentials,
        issuer: TokenIssuer,
        families: RefreshFamilies,
    ) -> None:
        self._context = context
        self._credentials = credentials
        self._issuer = issuer
        self._families = families

    async def refresh(
        self,
        refresh_token: str,
        *,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        check_client: bool = False,
        client: str | None = None,
        request_id: str | None = None,
        dpop_jkt: str | None = None,
    ) -> TokenPair:
        """Trade a refresh token for a new access token (and, if rotating, a successor).

        ``dpop_jkt``, the thumbprint of the request's checked DPoP proof (RFC 9449 §5),
        binds the new access token. A family bound to a DPoP key (a login's, made with a
        proof) needs a proof by that key; a public client's unbound family becomes bound
        from its next token on. A key's family stays bound by its client authentication.

        RFC 9700 §4.14.2: presenting a rotated-out token again after the grace window
        revokes its whole family.

        ``check_client`` applies RFC 6749 §6 (``/v1/token``; JWThenticator's ``/refresh``
        does not): ``client`` is the id of the authenticated client (`authenticate_client`),
        or None for a request without client authentication. A token issued to an API key
        then needs that key's authentication; a login's token (a public client's) needs
        none and is refused to an authenticated key.

        Raises:
            InvalidClientError: the token was issued to an API key and ``client`` is None.
            InvalidGrantError: unknown, expired, revoked or reused token, wrong identifier,
                a token issued to another client, its key is no longer usable, or a DPoP
                proof by another key than the family is bound to.
            InvalidDPoPProofError: a bound family, or DPoP required, and no proof came.
            PolicyViolation: a scope beyond the original grant (RFC 6749 §6).
        """
        require_proof(self._context.config, None, dpop_jkt)
        now = self._context.clock()
        observer = self._context.observer
        record, holder = await self._refresh_holder(refresh_token, now)
        if check_client:
            self._check_refresh_client(record, holder, client)
        self._check_refresh_binding(record, holder, dpop_jkt)
        if identifier is not None and identifier != record.identifier:
            observer.authentication_failed("identifier_mismatch", key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)
        decision = decide_refresh(record, now=now, grace=self._context.config.refresh_reuse_grace)
        if decision is RefreshDecision.REUSE_DETECTED:
            await self._reuse_detected(record, holder, now, request_id)
        if decision not in (RefreshDecision.ROTATE, RefreshDecision.REUSE_LEGACY):
            observer.authentication_failed(_REFRESH_REFUSALS[decision], key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)
        grant = self._refresh_grant(record, holder, scopes)
        access = self._issuer.issue(holder, grant, now, family=record.family_id, jkt=dpop_jkt)
        if decision is RefreshDecision.REUSE_LEGACY:
            self._refreshed(rotating=False, key_id=holder.id, jti=access.jti)
            return TokenPair(access=access, scopes=grant.scopes)
        if record.user_id is not None and record.dpop_jkt is None and dpop_jkt is not None:
            record = replace(record, dpop_jkt=dpop_jkt)  # RFC 9449 §5: bind from now on
        return await self._rotate(record, holder, grant, access, now=now, request_id=request_id)

    async def _refresh_holder(
        self, refresh_token: str, now: datetime
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | UserRecord]:
        """The stored refresh token and the usable key or active user it belongs to."""
        observer = self._context.observer
        try:
            found = await self._credentials.find_refresh_token(refresh_token)
        except MalformedSecretError as exc:
            observer.authentication_failed("malformed_refresh_token")
            raise InvalidGrantError(_BAD_REFRESH) from exc
        if found is None:
            observer.authentication_failed("unknown_refresh_token")
            raise InvalidGrantError(_BAD_REFRESH)
        record, key = found
        if record.user_id is not None:
            user = await self._context.storage.users.get(record.user_id)
            if user is None or not user.is_active:  # a disabled user cannot refresh
                observer.authentication_failed("user_unusable", key_id=record.user_id)
                raise InvalidGrantError(_BAD_REFRESH)
            return record, user
        if key is None or not key.is_usable(now):
            observer.authentication_failed("key_unusable", key_id=record.key_id)
            raise InvalidGrantError(_BAD_REFRESH)
        return record, key

    async def _reuse_detected(
        self,
        record: RefreshTokenRecord,
        holder: ApiKeyRecord | UserRecord,
        now: datetime,
        request_id: str | None,
    ) -> None:
        """RFC 9700 §4.14.2: a rotated-out token came back; its family dies. Always raises."""
        observer = self._context.observer
        observer.refresh_reuse_detected(key_id=holder.id, family_id=record.family_id)
        observer.authentication_failed("refresh_token_reused", key_id=holder.id)
        await self._families.revoke(
            record,
            now,
            action="refresh.reuse_detected",
            target_id=holder.id,
            actor=record.subject,
            request_id=request_id,
            outcome="failure",
            refresh_token_id=record.id,
        )
        raise InvalidGrantError(_BAD_REFRESH)

    async def _rotate(
        self,
        record: RefreshTokenRecord,
        holder: ApiKeyRecord | UserRecord,
        grant: Grant,
        access: IssuedToken,
        *,
        now: datetime,
        request_id: str | None,
    ) -> TokenPair:
        """Replace ``record`` by its successor (compare-and-set) and answer both tokens."""
        secret, successor = self._issuer.mint_successor(record, now)
        rotated = await self._context.storage.refresh_tokens.rotate(
            record.id,
            successor,
            now=now,
            audit=audit_event(
                "token.refreshed",
                holder.id,
                actor=record.subject,
                request_id=request_id,
                at=now,
                jti=access.jti,
                refresh_token_id=successor.id,
                parent_id=record.id,
                family_id=record.family_id,
            ),
        )
        if not rotated:  # another request rotated it first: a concurrent replay
            self._context.observer.authentication_failed("refresh_token_replayed", key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)
        self._refreshed(rotating=True, key_id=holder.id, jti=access.jti)
        return TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret,
            refresh_expires_at=successor.expires_at,
        )

    def _check_refresh_client(
        self, record: RefreshTokenRecord, holder: ApiKeyRecord | UserRecord, client: str | None
    ) -> None:
        """RFC 6749 §6: a token issued to a key needs that key's client authentication.

        A login's token belongs to no client that could authenticate (a public client's).
        """
        if client == record.key_id:
            return
        if client is None:
            self._context.observer.authentication_failed(
                "client_authentication_required", key_id=holder.id
            )
            raise InvalidClientError(_CLIENT_REQUIRED)
        self._context.observer.authentication_failed("wrong_client", key_id=holder.id)
        raise InvalidGrantError(_NOT_YOUR_REFRESH)

    def _check_refresh_binding(
        self, record: RefreshTokenRecord, holder: ApiKeyRecord | UserRecord, jkt: str | None
    ) -> None:
        """RFC 9449 §5: a bound family needs a proof by its key; a key may require DPoP."""
        require_proof(self._context.config, holder, jkt)
        if record.dpop_jkt is None:
            return
        observer = self._context.observer
        if jkt is None:
            observer.authentication_failed("invalid_dpop_proof", key_id=holder.id)
            raise InvalidDPoPProofError(
                "this refresh token is DPoP-bound: send a DPoP proof made with its key"
            )
        if jkt != record.dpop_jkt:
            observer.authentication_failed("invalid_dpop_proof", key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)

    def _refreshed(self, *, rotating: bool, key_id: str, jti: str) -> None:
        self._context.observer.token_refreshed(rotating=rotating, key_id=key_id, jti=jti)
        self._context.observer.token_issued("refresh_token", key_id=key_id, jti=jti)

    def _refresh_grant(
        self,
        record: RefreshTokenRecord,
        holder: ApiKeyRecord | UserRecord,
        scopes: Iterable[str] | None,
    ) -> Grant:
        original = frozenset(record.scope)
        if scopes is not None:
            wanted = frozenset(scopes)
            beyond = wanted - original
            if beyond:
                # RFC 6749 §6: a refresh may narrow the grant, never widen it (T-RT-05).
                raise PolicyViolation(
                    "scope", " ".join(sorted(beyond)), "not part of the original grant"
                )
        else:
            wanted = original if holder.scopes is None else original & frozenset(holder.scopes)
        return self._issuer.grant_for(holder, wanted)
