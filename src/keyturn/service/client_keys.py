"""Keyless clients: API keys' public keys and ``private_key_jwt`` (RFC 7523), `ClientKeys`."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from keyturn.core.assertions import (
    MAX_CLIENT_PUBLIC_KEYS,
    ClientAssertion,
    assertion_client_id,
    verify_client_assertion,
)
from keyturn.core.records import ApiKeyRecord, ClientPublicKeyRecord
from keyturn.core.signing import VerificationKey
from keyturn.errors import ConflictError, InvalidClientError, InvalidRequestError, NotFoundError
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import key_refusal
from keyturn.service.keys import KeyAdmin, distinct_public_keys, public_key_record
from keyturn.storage.base import ReplayRepository

__all__ = ["ClientKeys", "loaded_public_key"]

_BAD_ASSERTION: Final = "the client assertion is invalid"


@functools.lru_cache(maxsize=4096)
def _load(jwk_json: str) -> VerificationKey:
    return VerificationKey.from_jwk(json.loads(jwk_json))


def loaded_public_key(jwk: Mapping[str, Any]) -> VerificationKey:
    """A stored public JWK as a `VerificationKey`, parsed once per distinct JWK.

    Parsing and checking a key costs ~120 µs (an RSA or EC point check) on every
    ``private_key_jwt`` request otherwise; the cache is keyed on the JWK's content, so a
    removed or replaced key is simply never looked up again (the list comes from storage).
    """
    return _load(json.dumps(jwk, sort_keys=True, separators=(",", ":")))


class ClientKeys:
    """The public keys an API key authenticates with, and the assertions they sign."""

    def __init__(self, context: ServiceContext, keys: KeyAdmin, replays: ReplayRepository) -> None:
        self._context = context
        self._keys = keys
        #: Where single-use ids (assertion ``jti``s) are claimed.
        self.replays = replays

    async def list_for(self, key_id: str) -> list[ClientPublicKeyRecord]:
        """The public keys API key ``key_id`` authenticates with, oldest first.

        Raises:
            NotFoundError: no such key.
        """
        await self._keys.get(key_id)
        return await self._context.storage.client_keys.list(key_id)

    async def add(
        self,
        key_id: str,
        public_keys: Iterable[VerificationKey],
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> list[ClientPublicKeyRecord]:
        """Let API key ``key_id`` also authenticate with these public keys (rotation).

        Keys it already has are left as they are. Returns all its public keys.

        Raises:
            NotFoundError: no such key.
            ConflictError: the key is revoked.
            InvalidRequestError: no keys given, or more than `MAX_CLIENT_PUBLIC_KEYS`.
        """
        keys = distinct_public_keys(public_keys)
        if not keys:
            raise InvalidRequestError("give at least one public key")
        record = await self._keys.get(key_id)
        if record.revoked_at is not None:
            raise ConflictError(f"API key {key_id!r} is revoked")
        now = self._context.clock()
        audit = audit_event(
            "key.public_keys_added",
            key_id,
            actor=actor,
            request_id=request_id,
            at=now,
            kids=[k.kid for k in keys],
        )
        stored = await self._context.storage.client_keys.add(
            [public_key_record(key_id, key, now) for key in keys],
            limit=MAX_CLIENT_PUBLIC_KEYS,
            audit=audit,
        )
        if stored is None:
            raise InvalidRequestError(
                f"a key may have at most {MAX_CLIENT_PUBLIC_KEYS} public keys; remove one first"
            )
        return stored

    async def remove(
        self,
        key_id: str,
        kid: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Stop API key ``key_id`` authenticating with public key ``kid``.

        Raises:
            NotFoundError: no such key, or it has no public key ``kid``.
        """
        await self._keys.get(key_id)
        now = self._context.clock()
        audit = audit_event(
            "key.public_key_removed", key_id, actor=actor, request_id=request_id, at=now, kid=kid
        )
        if not await self._context.storage.client_keys.remove(key_id, kid, audit=audit):
            raise NotFoundError(f"API key {key_id!r} has no public key {kid!r}")

    async def authenticate(self, credential: ClientAssertion, now: datetime) -> ApiKeyRecord:
        """The key a ``private_key_jwt`` assertion authenticates (RFC 7523 §3), or raise.

        Raises:
            InvalidClientError: any rule fails, or the assertion's ``jti`` was seen before.
        """
        observer = self._context.observer
        try:
            client_id = credential.client_id or assertion_client_id(credential.assertion)
        except InvalidClientError:
            observer.authentication_failed("invalid_client_assertion")
            raise
        record, stored = await self._context.storage.client_keys.find_client(client_id)
        if record is None or not stored:
            observer.authentication_failed("unknown_key")
            raise InvalidClientError(_BAD_ASSERTION)
        reason = key_refusal(record, None, now)
        if reason is not None:
            observer.authentication_failed(reason, key_id=record.id)
            raise InvalidClientError(_BAD_ASSERTION)
        leeway = self._context.config.leeway
        try:
            verified = verify_client_assertion(
                credential.assertion,
                client_id=client_id,
                keys=[loaded_public_key(key.jwk) for key in stored],
                audiences=credential.audiences,
                now=int(now.timestamp()),
                leeway=leeway,
            )
        except InvalidClientError:
            observer.authentication_failed("invalid_client_assertion", key_id=record.id)
            raise
        # Single use across every instance: kept until the assertion could no longer pass.
        keep_until = datetime.fromtimestamp(verified.expires_at + leeway, UTC)
        if not await self.replays.claim(verified.replay_id, expires_at=keep_until, now=now):
            observer.authentication_failed("client_assertion_replayed", key_id=record.id)
            raise InvalidClientError("the client assertion was used before (its jti is spent)")
        return record
