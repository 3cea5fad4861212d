"""The signing-key lifecycle: `SigningKeys` (ensure, import, rotate, activate, reload).

It owns the `KeySet` the verifier reads and the key new tokens are signed with.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from keyturn.core.keywrap import KeyWrapper
from keyturn.core.records import SigningKeyRecord, SigningKeyState
from keyturn.core.signing import KeySet, SigningKey, VerificationKey
from keyturn.core.tokens import TokenVerifier
from keyturn.errors import SigningKeyError
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext

__all__ = ["SigningKeys"]


class SigningKeys:
    """Signing keys: stored sealed, published before they sign, retired after."""

    def __init__(
        self, context: ServiceContext, key_wrapper: KeyWrapper, verifier: TokenVerifier
    ) -> None:
        self._context = context
        self._key_wrapper = key_wrapper
        self._verifier = verifier
        #: The key new tokens are signed with (None before the first `reload`).
        self.active: SigningKey | None = None
        self._active_since: datetime | None = None

    @property
    def key_set(self) -> KeySet:
        """The keys currently trusted and published."""
        keys = self._verifier.keys
        return keys if isinstance(keys, KeySet) else KeySet()

    async def stored(self) -> list[SigningKeyRecord]:
        """Every stored signing key with its lifecycle state (no private material)."""
        return await self._context.storage.signing_keys.list()

    def age(self) -> timedelta | None:
        """How long the active signing key has been signing (None before `start`)."""
        if self._active_since is None:
            return None
        return self._context.clock() - self._active_since

    async def ensure(self) -> None:
        """Create the first active signing key if there is none, then load the key set.

        Safe when several instances start together on an empty database: storage lets
        exactly one ACTIVE key in, and the others load it.
        """
        records = await self._context.storage.signing_keys.list()
        if not any(r.state is SigningKeyState.ACTIVE for r in records):
            now = self._context.clock()
            key = SigningKey.generate(self._context.config.signing_algorithm)
            await self._context.storage.signing_keys.add(
                self._record(key, SigningKeyState.ACTIVE, now, activated_at=now),
                audit=audit_event(
                    "signing_key.created",
                    key.kid,
                    actor=None,
                    request_id=None,
                    at=now,
                    alg=key.alg,
                    state="active",
                ),
            )
        await self.reload()

    async def import_key(
        self, key: SigningKey, *, actor: str | None = None, request_id: str | None = None
    ) -> bool:
        """Make a key supplied by the operator (e.g. JWThenticator's RSA key) the active one.

        Idempotent: a key already stored changes nothing and returns False. Otherwise it
        is stored pending and activated at once (the previous active key is retired and
        stays published until its tokens expire).
        """
        records = await self._context.storage.signing_keys.list()
        if any(record.kid == key.kid for record in records):
            return False
        now = self._context.clock()
        state = (
            SigningKeyState.PENDING
            if any(r.state is SigningKeyState.ACTIVE for r in records)
            else SigningKeyState.ACTIVE
        )
        added = await self._context.storage.signing_keys.add(
            self._record(
                key, state, now, activated_at=now if state is SigningKeyState.ACTIVE else None
            ),
            audit=audit_event(
                "signing_key.imported",
                key.kid,
                actor=actor,
                request_id=request_id,
                at=now,
                alg=key.alg,
            ),
        )
        if added and state is SigningKeyState.PENDING:
            await self._activate(key.kid, now, actor, request_id)
        await self.reload()
        return added

    async def reload(self) -> KeySet:
        """Load the published keys (pending, active, retired-but-published) from storage."""
        now = self._context.clock()
        records = await self._context.storage.signing_keys.list()
        active: SigningKey | None = None
        since: datetime | None = None
        published: list[VerificationKey] = []
        for record in records:
            if record.publish_until is not None and record.publish_until <= now:
                continue
            if record.state is SigningKeyState.ACTIVE:
                active = self._unseal(record)
                since = record.activated_at or record.created_at
            else:
                published.append(VerificationKey.from_jwk(record.public_jwk))
        key_set = KeySet(signing_key=active, verification_keys=tuple(published))
        self.active = active
        self._active_since = since
        self._verifier.set_keys(key_set)
        return key_set

    async def rotate(
        self,
        *,
        immediately: bool = False,
        algorithm: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Start a signing-key rotation and return the new ``kid``.

        The new key is published at once and starts signing once it has been in the
        JWKS for ``signing_key_publish_delay`` (`activate_due`), so no verifier meets a
        ``kid`` it could not have fetched. ``immediately`` skips the wait (an emergency:
        verifiers refetch their JWKS on the unknown ``kid``).
        """
        now = self._context.clock()
        key = SigningKey.generate(algorithm or self._context.config.signing_algorithm)
        await self._context.storage.signing_keys.add(
            self._record(key, SigningKeyState.PENDING, now),
            audit=audit_event(
                "signing_key.created",
                key.kid,
                actor=actor,
                request_id=request_id,
                at=now,
                alg=key.alg,
                state="pending",
            ),
        )
        if immediately:
            await self._activate(key.kid, now, actor, request_id)
        await self.reload()
        return key.kid

    async def activate_due(self) -> list[str]:
        """Activate pending keys that have been published long enough; return their kids."""
        now = self._context.clock()
        delay = self._context.config.signing_key_publish_delay
        due = [
            r
            for r in await self._context.storage.signing_keys.list()
            if r.state is SigningKeyState.PENDING and r.created_at + delay <= now
        ]
        activated = []
        for record in due[-1:]:  # the newest due key wins; older pending ones stay published
            if await self._activate(record.kid, now, None, None):
                activated.append(record.kid)
        if activated:
            await self.reload()
        return activated

    async def _activate(
        self, kid: str, now: datetime, actor: str | None, request_id: str | None
    ) -> bool:
        config = self._context.config
        # A retired key stays published until every token it signed has expired.
        publish_until = now + config.access_token_lifetime + timedelta(seconds=config.leeway)
        return await self._context.storage.signing_keys.activate(
            kid,
            at=now,
            retired_publish_until=publish_until,
            audit=audit_event(
                "signing_key.activated", kid, actor=actor, request_id=request_id, at=now
            ),
        )

    def _record(
        self,
        key: SigningKey,
        state: SigningKeyState,
        now: datetime,
        activated_at: datetime | None = None,
    ) -> SigningKeyRecord:
        return SigningKeyRecord(
            kid=key.kid,
            alg=key.alg,
            public_jwk=dict(key.verification_key.to_jwk()),
            sealed_private_key=self._key_wrapper.seal(key.kid, key.private_pem()),
            state=state,
            created_at=now,
            activated_at=activated_at,
        )

    def _unseal(self, record: SigningKeyRecord) -> SigningKey:
        key = SigningKey.from_pem(
            self._key_wrapper.open(record.kid, record.sealed_private_key), alg=record.alg
        )
        if key.kid != record.kid:
            raise SigningKeyError(f"stored signing key {record.kid!r} does not match its kid")
        return key
