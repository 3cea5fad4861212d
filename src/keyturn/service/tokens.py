"""The token grants: `TokenService` (API key, refresh, revocation, validation).

``authenticate`` is the client-credentials grant (and JWThenticator's ``/authenticate``),
``refresh`` the refresh-token grant with RFC 9700 §4.14.2 rotation, ``revoke_token``
RFC 7009 revocation and ``validate`` the verifier with the service's revocation state.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from keyturn.core.assertions import ClientAssertion
from keyturn.core.policy import Grant
from keyturn.core.records import ApiKeyRecord, RefreshTokenRecord, UserRecord
from keyturn.core.refresh import RefreshDecision, decide_refresh
from keyturn.core.revocation import REVOCATION_MARGIN
from keyturn.core.secrets import looks_generated
from keyturn.core.tokens import IssuedToken, TokenVerifier, VerifiedToken
from keyturn.errors import (
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    InvalidTokenError,
    MalformedSecretError,
    PolicyViolation,
    UnauthorizedClientError,
)
from keyturn.service.audit import audit_event
from keyturn.service.client_keys import ClientKeys
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import BAD_KEY, Credentials
from keyturn.service.families import RefreshFamilies
from keyturn.service.issuing import TokenIssuer, TokenPair
from keyturn.storage.base import RevocationSnapshot

__all__ = ["TokenService"]

# One message for every bad refresh token, so responses cannot tell the cases apart.
_BAD_REFRESH: Final = "the refresh token is not valid"
_CLIENT_REQUIRED: Final = (
    "this refresh token was issued to an API key: authenticate with that key "
    "(HTTP Basic or client_secret)"
)
_NOT_YOUR_REFRESH: Final = "the refresh token was not issued to the authenticated client"
_NOT_YOUR_TOKEN: Final = "the token was not issued to the authenticated client"  # noqa: S105
_REFRESH_REFUSALS: Final = {
    RefreshDecision.EXPIRED: "expired_refresh_token",
    RefreshDecision.REVOKED: "revoked_refresh_token",
    RefreshDecision.REPLAY_IN_GRACE: "refresh_token_replayed",
}


class TokenService:
    """Issues, refreshes, revokes and validates tokens for API keys (and users' refreshes)."""

    def __init__(
        self,
        context: ServiceContext,
        *,
        credentials: Credentials,
        issuer: TokenIssuer,
        client_keys: ClientKeys,
        families: RefreshFamilies,
        verifier: TokenVerifier,
    ) -> None:
        self._context = context
        self._credentials = credentials
        self._issuer = issuer
        self._client_keys = client_keys
        self._families = families
        self._verifier = verifier

    async def authenticate(
        self,
        key: str | ClientAssertion,
        *,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        rotating: bool = True,
        client_id: str | None = None,
        issue_refresh_token: bool = True,
        request_id: str | None = None,
    ) -> TokenPair:
        """Trade an API key for an access token and a refresh token.

        ``rotating`` False issues a legacy (JWThenticator) refresh token that is reused
        instead of rotated. When the key was registered with an identifier, ``identifier``
        must match it; so must ``client_id`` (RFC 6749 §2.3.1) the key's id when given. A
        mismatch fails exactly like an unknown key. ``issue_refresh_token`` False issues
        the access token alone (RFC 6749 §4.4.3). ``key`` may instead be a
        `ClientAssertion` (``private_key_jwt``, RFC 7523), checked by `authenticate_client`'s
        rules.

        Raises:
            InvalidGrantError: unknown, malformed, expired or revoked key, or wrong identifier.
            InvalidClientError: the client assertion is refused.
            PolicyViolation: a requested scope the key or the policy does not allow.
        """
        now = self._context.clock()
        if isinstance(key, ClientAssertion):
            record = await self._client_keys.authenticate(key, now)
            self._credentials.check_key(
                record, now, identifier=identifier, client_id=client_id, error=InvalidGrantError
            )
        else:
            record = await self._credentials.authenticate_key(
                key, now, identifier=identifier, client_id=client_id
            )
        grant = self._issuer.grant_for(record, scopes)
        if not issue_refresh_token:
            access = self._issuer.issue(record, grant, now)
            await self._context.storage.audit.record(
                audit_event(
                    "token.issued",
                    record.id,
                    actor=record.subject,
                    request_id=request_id,
                    at=now,
                    jti=access.jti,
                )
            )
            return await self._issued(record, now, TokenPair(access=access, scopes=grant.scopes))
        secret, refresh = self._issuer.mint_refresh_token(record, grant, now, rotating=rotating)
        access = self._issuer.issue(record, grant, now, family=refresh.family_id)
        if not await self._issuer.store_refresh_token(
            refresh, record, access, now, request_id=request_id
        ):  # revoked since it was read: nothing is issued once that committed
            self._context.observer.authentication_failed("revoked_key", key_id=record.id)
            raise InvalidGrantError(BAD_KEY)
        pair = TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret,
            refresh_expires_at=refresh.expires_at,
        )
        return await self._issued(record, now, pair)

    async def _issued(self, record: ApiKeyRecord, now: datetime, pair: TokenPair) -> TokenPair:
        """Note a key's use (at most every ``last_used_resolution``) and report the token."""
        last = record.last_used_at
        if last is None or now - last >= self._context.config.last_used_resolution:
            await self._context.storage.keys.mark_used(record.id, at=now)
        self._context.observer.token_issued("api_key", key_id=record.id, jti=pair.access.jti)
        return pair

    async def authenticate_client(
        self, key: str | ClientAssertion, *, client_id: str | None = None
    ) -> str:
        """Authenticate an OAuth client by its API key (RFC 6749 §2.3.1); returns its id.

        ``client_id``, when given, must be the key's id. An unknown, malformed, expired or
        revoked key and a mismatched ``client_id`` fail alike, after the same lookup.
        ``key`` may instead be a `ClientAssertion` (``private_key_jwt``, RFC 7523 §2.2):
        signed by one of the key's public keys, with every RFC 7523 §3 rule, its ``jti``
        used once.

        Raises:
            InvalidClientError: the client could not be authenticated.
        """
        now = self._context.clock()
        if isinstance(key, ClientAssertion):
            return (await self._client_keys.authenticate(key, now)).id
        record = await self._credentials.authenticate_key(
            key, now, client_id=client_id, error=InvalidClientError
        )
        return record.id

    async def refresh(
        self,
        refresh_token: str,
        *,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        check_client: bool = False,
        client: str | None = None,
        request_id: str | None = None,
    ) -> TokenPair:
        """Trade a refresh token for a new access token (and, if rotating, a successor).

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
                a token issued to another client, or its key is no longer usable.
            PolicyViolation: a scope beyond the original grant (RFC 6749 §6).
        """
        now = self._context.clock()
        observer = self._context.observer
        record, holder = await self._refresh_holder(refresh_token, now)
        if check_client:
            self._check_refresh_client(record, holder, client)
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
        access = self._issuer.issue(holder, grant, now, family=record.family_id)
        if decision is RefreshDecision.REUSE_LEGACY:
            self._refreshed(rotating=False, key_id=holder.id, jti=access.jti)
            return TokenPair(access=access, scopes=grant.scopes)
        return await self._rotate(record, holder, grant, access, now=now, request_id=request_id)

    async def _refresh_holder(
        self, refresh_token: str, now: datetime
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | UserRecord]:
        """The stored refresh token and the usable key or active user it belongs to."""
        observer = self._context.observer
        try:
            found = await self._credentials.find_refresh_token(refresh_token, accept_legacy=True)
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

    async def revoke_token(
        self,
        token: str,
        *,
        client: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> bool:
        """Revoke a refresh token (its whole family) or an access token (by ``jti``).

        Revoking a refresh token also refuses every access token issued from its family
        (RFC 7009 §2.1). ``client``, the id of an authenticated client, must be the one
        the token was issued to (RFC 7009 §2.1); None (no client authentication) lets the
        token itself prove possession.

        RFC 7009 §2.2: an unknown or invalid token is not an error; returns False.

        Raises:
            UnauthorizedClientError: ``client`` is not the client the token was issued to;
                nothing was revoked.
        """
        now = self._context.clock()
        if looks_generated(token):
            try:
                found = await self._credentials.find_refresh_token(token)
            except MalformedSecretError:
                return False
            if found is None:
                return False
            record = found[0]
            self._check_owner(client, record.key_id)
            revoked = await self._families.revoke(
                record,
                now,
                action="refresh.revoked",
                target_id=record.key_id or record.user_id,
                actor=actor or record.subject,
                request_id=request_id,
            )
            return revoked > 0
        try:
            verified = self._verifier.verify(token)
        except InvalidTokenError:
            return False
        self._check_owner(client, verified.client_id)
        await self._context.storage.revocations.revoke_access_token(
            verified.jti,
            expires_at=datetime.fromtimestamp(verified.expires_at, UTC),
            audit=audit_event(
                "token.revoked",
                verified.client_id,
                actor=actor or verified.subject,
                request_id=request_id,
                at=now,
                jti=verified.jti,
            ),
        )
        self._context.revocations.revoke_token(verified.jti, expires_at=verified.expires_at)
        return True

    def _check_owner(self, client: str | None, owner: str | None) -> None:
        """RFC 7009 §2.1: an authenticated client revokes only its own tokens."""
        if client is not None and client != owner:
            self._context.observer.authentication_failed("wrong_client", key_id=client)
            raise UnauthorizedClientError(_NOT_YOUR_TOKEN)

    def validate(self, token: str, *, required_scopes: Iterable[str] = ()) -> VerifiedToken:
        """Verify an access token against the current keys and revocation state.

        Raises:
            InvalidTokenError: the token is not valid.
            InsufficientScopeError: a required scope is missing.
        """
        try:
            return self._verifier.verify(token, required_scopes=required_scopes)
        except InsufficientScopeError:
            self._context.observer.authentication_failed("insufficient_scope")
            raise
        except InvalidTokenError:
            self._context.observer.authentication_failed("invalid_token")
            raise

    async def reload_revocations(self) -> RevocationSnapshot:
        """Replace the in-memory revocation state with what storage holds now."""
        config = self._context.config
        snapshot = await self._context.storage.revocations.snapshot(
            now=self._context.clock(),
            # A subject revoked longer ago than this has no unexpired token left.
            max_token_lifetime=config.access_token_lifetime
            + timedelta(seconds=config.leeway + REVOCATION_MARGIN),
        )
        self._context.revocations.replace(tokens=snapshot.tokens, subjects=snapshot.subjects)
        return snapshot

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
