"""Password logins and their sessions: `PasswordLogin` (``login``, ``logout``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from keyturn.core.accounts import check_email, email_key
from keyturn.core.passwords import MAX_PASSWORD_LENGTH
from keyturn.core.records import UserRecord
from keyturn.errors import InvalidGrantError, InvalidRequestError, MalformedSecretError
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import Credentials
from keyturn.service.dpop import require_proof
from keyturn.service.families import RefreshFamilies
from keyturn.service.issuing import TokenIssuer, TokenPair
from keyturn.service.passwords import PasswordWorker

__all__ = ["PasswordLogin"]

# One message for every failed login, so responses cannot tell the cases apart (T-BF-01).
_BAD_LOGIN: Final = "the email or password is not valid"


def _could_be_account(email: str) -> bool:
    try:
        check_email(email)
    except InvalidRequestError:
        return False
    return True


class PasswordLogin:
    """Trades an email and a password for tokens, and ends the session they start."""

    def __init__(
        self,
        context: ServiceContext,
        passwords: PasswordWorker,
        issuer: TokenIssuer,
        credentials: Credentials,
        families: RefreshFamilies,
    ) -> None:
        self._context = context
        self._passwords = passwords
        self._issuer = issuer
        self._credentials = credentials
        self._families = families

    async def login(
        self,
        email: str,
        password: str,
        *,
        scopes: Iterable[str] | None = None,
        refresh: bool = True,
        request_id: str | None = None,
        dpop_jkt: str | None = None,
    ) -> TokenPair:
        """Trade an email and a password for an access token and a rotating refresh token.

        An unknown email, a wrong password and a disabled user fail alike, after the same
        argon2 work (a dummy verification for unknown emails; ASVS 6.3.8). A hash made
        with other parameters is replaced on success. ``refresh`` False issues only the
        access token (``POST /login``). ``dpop_jkt`` (a checked DPoP proof's thumbprint)
        binds the access token and the refresh-token family to that key (RFC 9449 §5).

        Raises:
            InvalidGrantError: the email or password is not valid, or the user is disabled.
            InvalidDPoPProofError: the deployment requires DPoP and no proof came.
            PolicyViolation: a requested scope the user or the policy does not allow.
        """
        require_proof(self._context.config, None, dpop_jkt)
        now = self._context.clock()
        user = await self._check_password(email, password, now, request_id)
        grant = self._issuer.grant_for(user, scopes)
        hasher, rehashed, mint = self._passwords.hasher, None, self._issuer.mint_refresh_token
        if hasher.needs_rehash(user.password_hash):
            rehashed = await self._passwords.run(hasher.hash, password)
        minted = mint(user, grant, now, dpop_jkt=dpop_jkt) if refresh else None
        family = None if minted is None else minted[1].family_id
        access = self._issuer.issue(user, grant, now, family=family, jkt=dpop_jkt)
        await self._context.storage.users.record_login(
            user.id,
            at=now,
            audit=audit_event(
                "user.login",
                user.id,
                actor=user.subject,
                request_id=request_id,
                at=now,
                jti=access.jti,
                rehashed=rehashed is not None,
            ),
            rehashed_password=rehashed,
        )
        self._context.observer.token_issued("password", key_id=user.id, jti=access.jti)
        if minted is None:
            return TokenPair(access=access, scopes=grant.scopes)
        secret, token = minted
        await self._issuer.store_refresh_token(token, user, access, now, request_id=request_id)
        return TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret,
            refresh_expires_at=token.expires_at,
        )

    async def _check_password(
        self, email: str, password: str, now: datetime, request_id: str | None
    ) -> UserRecord:
        """The active user with this email and password, or `InvalidGrantError` (audited)."""
        observer = self._context.observer
        storage = self._context.storage
        if not _could_be_account(email) or len(password) > MAX_PASSWORD_LENGTH:
            observer.authentication_failed("unknown_email")
            raise InvalidGrantError(_BAD_LOGIN)  # no account can match: no work to spend
        user = await storage.users.find_by_email(email_key(email))
        if user is None:
            await self._passwords.run(self._passwords.hasher.verify_dummy, password)
            await storage.audit.record(
                audit_event(
                    "user.login_failed",
                    None,
                    actor=None,
                    request_id=request_id,
                    at=now,
                    outcome="failure",
                    reason="unknown_email",
                )
            )
            observer.authentication_failed("unknown_email")
            raise InvalidGrantError(_BAD_LOGIN)
        hasher = self._passwords.hasher
        matches = await self._passwords.run(hasher.verify, user.password_hash, password)
        if matches and user.is_active:
            return user
        failed = audit_event(
            "user.login_failed",
            user.id,
            actor=user.subject,
            request_id=request_id,
            at=now,
            outcome="failure",
            reason="disabled" if matches else "wrong_password",
        )
        if matches:
            await storage.audit.record(failed)
        else:
            await storage.users.record_failed_login(user.id, at=now, audit=failed)
        observer.authentication_failed(
            "user_unusable" if matches else "wrong_password", key_id=user.id
        )
        raise InvalidGrantError(_BAD_LOGIN)

    async def logout(self, refresh_token: str, *, request_id: str | None = None) -> bool:
        """End a session: revoke the refresh token's whole family.

        Returns False for an unknown, malformed or already revoked token (the caller's
        answer is the same either way, RFC 7009 §2.2).
        """
        now = self._context.clock()
        try:
            found = await self._credentials.find_refresh_token(refresh_token)
        except MalformedSecretError:
            return False
        if found is None:
            return False
        record = found[0]
        revoked = await self._families.revoke(
            record,
            now,
            action="user.logout" if record.user_id is not None else "refresh.revoked",
            target_id=record.user_id or record.key_id,
            actor=record.subject,
            request_id=request_id,
        )
        return revoked > 0
