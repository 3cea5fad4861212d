"""People who log in with a password: `UserAdmin` (create, find, list, disable, ...)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from keyturn.core.accounts import check_email, email_key, new_user_id
from keyturn.core.passwords import check_new_password
from keyturn.core.records import UserRecord
from keyturn.errors import ConflictError, NotFoundError
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext
from keyturn.service.issuing import password_claims
from keyturn.service.paging import fetch_page
from keyturn.service.passwords import PasswordWorker

__all__ = ["DUPLICATE_EMAIL", "UserAdmin", "UserPage"]

#: What a second account for an email is refused with (the CLI and the 409 `detail`).
DUPLICATE_EMAIL: Final = "a user with this email already exists (emails ignore case)"


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of users and the cursor of the next (None on the last page)."""

    users: list[UserRecord]
    next_after: str | None


class UserAdmin:
    """The users' lifecycle (admin API and CLI)."""

    def __init__(self, context: ServiceContext, passwords: PasswordWorker) -> None:
        self._context = context
        self._passwords = passwords

    async def create(
        self,
        email: str,
        password: str,
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> UserRecord:
        """Create a user who logs in with ``email`` and ``password``.

        The email is stored as given and must be unique ignoring letter case. Roles and
        scopes are checked against the claims policy now, as for keys.

        Raises:
            InvalidRequestError: not an email address.
            WeakPasswordError: the password breaks the password rules.
            PolicyViolation: a role or scope the policy does not allow.
            ConflictError: a user with this email exists.
        """
        now = self._context.clock()
        check_email(email)
        check_new_password(password, email=email)
        roles, scopes = tuple(roles), None if scopes is None else tuple(sorted(set(scopes)))
        policy = self._context.policy
        policy.build_claims(
            roles=roles or None,
            requested_scopes=scopes,
            key_scopes=scopes,
            extras=password_claims(policy),
        )
        password_hash = await self._passwords.run(self._passwords.hasher.hash, password)
        record = UserRecord(
            id=new_user_id(),
            email=email,
            email_key=email_key(email),
            password_hash=password_hash,
            created_at=now,
            roles=roles,
            scopes=scopes,
            password_changed_at=now,
        )
        audit = audit_event(
            "user.created",
            record.id,
            actor=actor,
            request_id=request_id,
            at=now,
            email=email,
            roles=list(roles),
        )
        try:
            await self._context.storage.users.add(record, audit=audit)
        except ConflictError as exc:  # the id is new: only the email's unique key can clash
            raise ConflictError(DUPLICATE_EMAIL) from exc
        return record

    async def get(self, user_id: str) -> UserRecord:
        """Return the user with this id.

        Raises:
            NotFoundError: no such user.
        """
        record = await self._context.storage.users.get(user_id)
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        return record

    async def find(self, email: str) -> UserRecord:
        """Return the user with this email (any letter case).

        Raises:
            NotFoundError: no such user.
        """
        record = await self._context.storage.users.find_by_email(email_key(email))
        if record is None:
            raise NotFoundError("no user with this email")
        return record

    async def list(
        self, *, limit: int = 50, after: str | None = None, include_disabled: bool = True
    ) -> UserPage:
        """One page of users ordered by id; pass ``next_after`` back for the next page."""
        users = self._context.storage.users
        page, next_after = await fetch_page(
            lambda n: users.list(limit=n, after=after, include_disabled=include_disabled), limit
        )
        return UserPage(users=page, next_after=next_after)

    async def disable(
        self,
        user_id: str,
        *,
        reason: str = "",
        actor: str | None = None,
        request_id: str | None = None,
    ) -> UserRecord:
        """Disable a user: no more logins or refreshes; their refresh and access tokens die.

        Raises:
            NotFoundError: no such user.
        """
        now = self._context.clock()
        audit = audit_event(
            "user.disabled", user_id, actor=actor, request_id=request_id, at=now, reason=reason
        )
        record = await self._context.storage.users.set_disabled(
            user_id, disabled_at=now, reason=reason or None, audit=audit
        )
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        if record.tokens_revoked_at is not None:
            revoked_at = int(record.tokens_revoked_at.timestamp())
            self._context.revocations.revoke_subject(record.subject, at=revoked_at)
        return record

    async def enable(
        self, user_id: str, *, actor: str | None = None, request_id: str | None = None
    ) -> UserRecord:
        """Let a disabled user log in again (their old refresh tokens stay revoked).

        Raises:
            NotFoundError: no such user.
        """
        now = self._context.clock()
        record = await self._context.storage.users.set_disabled(
            user_id,
            disabled_at=None,
            reason=None,
            audit=audit_event("user.enabled", user_id, actor=actor, request_id=request_id, at=now),
        )
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        return record

    async def set_password(
        self,
        user_id: str,
        password: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> UserRecord:
        """Give a user a new password; their refresh tokens are revoked (sessions end).

        Raises:
            NotFoundError: no such user.
            WeakPasswordError: the password breaks the password rules.
        """
        user = await self.get(user_id)
        check_new_password(password, email=user.email)
        password_hash = await self._passwords.run(self._passwords.hasher.hash, password)
        now = self._context.clock()
        record = await self._context.storage.users.set_password(
            user_id,
            password_hash=password_hash,
            at=now,
            audit=audit_event(
                "user.password_changed", user_id, actor=actor, request_id=request_id, at=now
            ),
        )
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        return record
