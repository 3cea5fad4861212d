"""Tokens for API keys: `TokenService` (client credentials, revocation, validation).

``authenticate`` is the client-credentials grant (and JWThenticator's ``/authenticate``),
``revoke_token`` RFC 7009 revocation and ``validate`` the verifier with the service's
revocation state. The refresh-token grant is `keyturn.service.refreshing.RefreshGrant`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from keyturn.core.assertions import ClientAssertion
from keyturn.core.policy import Grant
from keyturn.core.records import ApiKeyRecord
from keyturn.core.revocation import REVOCATION_MARGIN
from keyturn.core.tokens import TokenVerifier, VerifiedToken
from keyturn.errors import (
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    InvalidTokenError,
    KeyturnError,
    MalformedSecretError,
    UnauthorizedClientError,
)
from keyturn.service.audit import audit_event
from keyturn.service.client_keys import ClientKeys
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import BAD_KEY, Credentials
from keyturn.service.dpop import refuse_unproven, require_proof
from keyturn.service.families import RefreshFamilies
from keyturn.service.issuing import TokenIssuer, TokenPair
from keyturn.storage.base import RevocationSnapshot

__all__ = ["TokenService"]

_NOT_YOUR_TOKEN: Final = "the token was not issued to the authenticated client"  # noqa: S105


class TokenService:
    """Issues, revokes and validates tokens for API keys."""

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
        dpop_jkt: str | None = None,
    ) -> TokenPair:
        """Trade an API key for an access token and a refresh token.

        ``rotating`` False issues a legacy (JWThenticator) refresh token that is reused
        instead of rotated. When the key was registered with an identifier, ``identifier``
        must match it; so must ``client_id`` (RFC 6749 §2.3.1) the key's id when given. A
        mismatch fails exactly like an unknown key. ``issue_refresh_token`` False issues
        the access token alone (RFC 6749 §4.4.3). ``key`` may instead be a
        `ClientAssertion` (``private_key_jwt``, RFC 7523), checked by `authenticate_client`'s
        rules. ``dpop_jkt``, the thumbprint of the request's checked DPoP proof, binds the
        access token (RFC 9449 §5; the key's refresh token stays bound by its client
        authentication).

        Raises:
            InvalidGrantError: unknown, malformed, expired or revoked key, or wrong identifier.
            InvalidClientError: the client assertion is refused.
            InvalidDPoPProofError: DPoP is required (deployment or key) and no proof came.
            PolicyViolation: a requested scope the key or the policy does not allow.
        """
        require_proof(self._context.config, None, dpop_jkt)
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
        require_proof(self._context.config, record, dpop_jkt)
        grant = self._issuer.grant_for(record, scopes)
        if not issue_refresh_token:
            return await self._access_only(record, grant, now, request_id, dpop_jkt)
        secret, refresh = self._issuer.mint_refresh_token(record, grant, now, rotating=rotating)
        access = self._issuer.issue(record, grant, now, family=refresh.family_id, jkt=dpop_jkt)
        if not await self._issuer.store_refresh_token(
            refresh, record, access, now, request_id=request_id
        ):  # revoked or expired since it was read: nothing is issued once that committed
            self._context.key_cache.forget(record.id)
            self._context.observer.authentication_failed("revoked_key", key_id=record.id)
            raise InvalidGrantError(BAD_KEY)
        pair = TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret,
            refresh_expires_at=refresh.expires_at,
        )
        return await self._issued(record, now, pair)

    async def _access_only(
        self,
        record: ApiKeyRecord,
        grant: Grant,
        now: datetime,
        request_id: str | None,
        jkt: str | None,
    ) -> TokenPair:
        """The access token alone (RFC 6749 §4.4.3), audited without a refresh token."""
        access = self._issuer.issue(record, grant, now, jkt=jkt)
        recorded = await self._context.storage.audit.record_issuance(
            audit_event(
                "token.issued",
                record.id,
                actor=record.subject,
                request_id=request_id,
                at=now,
                jti=access.jti,
            )
        )
        if not recorded:  # revoked or expired in the database since this record was read
            self._context.key_cache.forget(record.id)
            self._context.observer.authentication_failed("revoked_key", key_id=record.id)
            raise InvalidGrantError(BAD_KEY)
        return await self._issued(record, now, TokenPair(access=access, scopes=grant.scopes))

    async def _issued(self, record: ApiKeyRecord, now: datetime, pair: TokenPair) -> TokenPair:
        """Note a key's use (written in batches, see `KeyUsage`) and report the token."""
        context = self._context
        if context.key_usage.note(record, now):
            # No poller flushed for a whole resolution (a library without the server's
            # background tasks): this request does. ``last_used_at`` is informational, so
            # an outage here does not refuse the token already issued and audited.
            with contextlib.suppress(KeyturnError):
                await context.key_usage.flush(context.storage.keys)
        context.observer.token_issued("api_key", key_id=record.id, jti=pair.access.jti)
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
        if self._credentials.could_be_refresh_token(token):
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

    def validate(
        self, token: str, *, required_scopes: Iterable[str] = (), allow_bound: bool = False
    ) -> VerifiedToken:
        """Verify an access token against the current keys and revocation state.

        A DPoP-bound token (``cnf.jkt``) is refused unless ``allow_bound``: this check sees
        no DPoP proof (`keyturn.service.dpop.refuse_unproven`). A caller that checks the
        proof itself, or only reports the binding (introspection), allows it.

        Raises:
            InvalidTokenError: the token is not valid, or is DPoP-bound and not allowed
                (`keyturn.service.dpop.DPoPBoundTokenError`).
            InsufficientScopeError: a required scope is missing.
        """
        try:
            verified = self._verifier.verify(token, required_scopes=required_scopes)
            if not allow_bound:
                refuse_unproven(verified)
            return verified
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
