"""What a token may say and the minting of access and refresh tokens: `TokenIssuer`.

Every grant (API key, refresh, password login) ends here: `grant_for` applies the claims
policy to the holder, `issue` signs the access token and `mint_refresh_token` makes the
refresh token a family starts with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from keyturn.core.dpop import confirmation
from keyturn.core.policy import ClaimsPolicy, Grant
from keyturn.core.records import ApiKeyRecord, RefreshTokenRecord, UserRecord
from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.core.tokens import IssuedToken, issue_access_token
from keyturn.errors import SigningKeyError
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import Credentials
from keyturn.service.signing import SigningKeys

__all__ = [
    "LOGIN_CLIENT_ID",
    "PASSWORD_FACTOR",
    "PASSWORD_LEVEL",
    "TokenIssuer",
    "TokenPair",
    "password_claims",
]

#: ``client_id`` of tokens issued at login: no OAuth client asked, the person did.
LOGIN_CLIENT_ID: Final = "keyturn-login"
#: apijwt's assurance level for a password login, and the factor it names.
PASSWORD_LEVEL: Final = 2.0
PASSWORD_FACTOR: Final = "password"  # noqa: S105 -- the factor's name, not a secret


@dataclass(frozen=True, slots=True)
class TokenPair:
    """An access token and, unless a legacy refresh re-used one, a refresh token."""

    access: IssuedToken
    scopes: frozenset[str]
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: datetime | None = None


def password_claims(policy: ClaimsPolicy) -> dict[str, Any]:
    """The claims a password login adds: only those the policy declares (``level``...)."""
    declared = {rule.name for rule in policy.claims}
    claims = {"level": PASSWORD_LEVEL, "factor": PASSWORD_FACTOR}
    return {name: value for name, value in claims.items() if name in declared}


class TokenIssuer:
    """Grants, access tokens and new refresh tokens for API keys and users."""

    def __init__(
        self, context: ServiceContext, signing: SigningKeys, credentials: Credentials
    ) -> None:
        self._context = context
        self._signing = signing
        self._credentials = credentials

    def grant_for(self, holder: ApiKeyRecord | UserRecord, scopes: Iterable[str] | None) -> Grant:
        """What a token for ``holder`` may carry: a key's stored claims, or a password login's.

        Raises:
            PolicyViolation: a requested scope the holder or the policy does not allow.
        """
        policy = self._context.policy
        if isinstance(holder, UserRecord):
            return policy.build_claims(
                roles=holder.roles or None,
                requested_scopes=scopes,
                key_scopes=holder.scopes,
                extras=password_claims(policy),
                holder="user",
            )
        return policy.build_claims(
            roles=holder.roles or None,
            requested_scopes=scopes,
            key_scopes=holder.scopes,
            extras=holder.extra_claims,
        )

    def issue(
        self,
        holder: ApiKeyRecord | UserRecord,
        grant: Grant,
        now: datetime,
        *,
        family: str | None = None,
        jkt: str | None = None,
    ) -> IssuedToken:
        """Sign an access token for ``holder`` carrying ``grant``.

        ``jkt`` binds it to a DPoP key (RFC 9449 §6.1: ``cnf``).

        Raises:
            SigningKeyError: there is no active signing key yet (before ``start()``).
        """
        signing_key = self._signing.active
        if signing_key is None:
            raise SigningKeyError("no active signing key; call start() first")
        config = self._context.config
        is_key = isinstance(holder, ApiKeyRecord)
        return issue_access_token(
            signing_key,
            issuer=config.issuer,
            audience=config.audience,
            subject=holder.subject,
            client_id=holder.id if is_key else LOGIN_CLIENT_ID,
            now=int(now.timestamp()),
            lifetime=config.access_lifetime_seconds,
            scopes=grant.scopes,
            identifier=holder.identifier if isinstance(holder, ApiKeyRecord) else None,
            extra_claims=grant.claims,
            family=family,
            confirmation=None if jkt is None else confirmation(jkt),
        )

    def mint_refresh_token(
        self,
        holder: ApiKeyRecord | UserRecord,
        grant: Grant,
        now: datetime,
        *,
        rotating: bool = True,
        dpop_jkt: str | None = None,
    ) -> tuple[str, RefreshTokenRecord]:
        """A new refresh token starting its own family: the secret (once) and its record.

        ``rotating`` False makes a legacy (JWThenticator) token, reused instead of rotated.
        ``dpop_jkt`` binds the family to a DPoP key (RFC 9449 §5, public clients).
        """
        config = self._context.config
        secret = generate_secret(SecretKind.REFRESH_TOKEN)
        lifetime = (
            config.refresh_token_lifetime if rotating else config.legacy_refresh_token_lifetime
        )
        is_key = isinstance(holder, ApiKeyRecord)
        record = RefreshTokenRecord(
            id=secret.id,
            family_id=secret.id,
            token_hash=self._credentials.hash(secret.value, SecretKind.REFRESH_TOKEN),
            subject=holder.subject,
            scope=tuple(sorted(grant.scopes)),
            created_at=now,
            expires_at=now + lifetime,
            rotating=rotating,
            key_id=holder.id if is_key else None,
            user_id=None if is_key else holder.id,
            identifier=holder.identifier if isinstance(holder, ApiKeyRecord) else None,
            dpop_jkt=dpop_jkt,
        )
        return secret.value, record

    def mint_successor(
        self, record: RefreshTokenRecord, now: datetime
    ) -> tuple[str, RefreshTokenRecord]:
        """The token that replaces ``record`` in its family at rotation: secret and record."""
        secret = generate_secret(SecretKind.REFRESH_TOKEN)
        successor = RefreshTokenRecord(
            id=secret.id,
            family_id=record.family_id,
            parent_id=record.id,
            token_hash=self._credentials.hash(secret.value, SecretKind.REFRESH_TOKEN),
            subject=record.subject,
            scope=record.scope,  # the family keeps its original grant; narrowing is per token
            created_at=now,
            expires_at=record.expires_at,  # absolute: rotation never extends a family
            rotating=True,
            key_id=record.key_id,
            user_id=record.user_id,
            identifier=record.identifier,
            dpop_jkt=record.dpop_jkt,  # the family stays bound to its key
        )
        return secret.value, successor

    async def store_refresh_token(
        self,
        token: RefreshTokenRecord,
        holder: ApiKeyRecord | UserRecord,
        access: IssuedToken,
        now: datetime,
        *,
        request_id: str | None,
    ) -> bool:
        """Store a minted refresh token with its ``token.issued`` audit row.

        Returns False when the key was revoked since it was read: nothing was stored.
        """
        return await self._context.storage.refresh_tokens.add(
            token,
            audit=audit_event(
                "token.issued",
                holder.id,
                actor=holder.subject,
                request_id=request_id,
                at=now,
                jti=access.jti,
                refresh_token_id=token.id,
                rotating=token.rotating,
            ),
        )
