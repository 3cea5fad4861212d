"""Keyturn's use cases: the one layer that both awaits storage and calls the core.

`KeyturnService` registers, rotates and revokes API keys, manages users and their
passwords (argon2 runs in worker threads, `PasswordWorker`), trades keys and passwords
for tokens, refreshes (legacy and rotating), manages the signing-key lifecycle and keeps
the revocation state its verifier consults. It knows nothing of HTTP: the server, the
CLI and the tests call it.

It is built from parts, one module each, and delegates to them:

* `keyturn.service.keys` (`KeyAdmin`) and `keyturn.service.client_keys` (`ClientKeys`,
  ``private_key_jwt``): API keys;
* `keyturn.service.users` (`UserAdmin`) and `keyturn.service.sessions`
  (`PasswordLogin`): people and their password logins;
* `keyturn.service.tokens` (`TokenService`): client credentials, revocation, validation,
  and `keyturn.service.refreshing` (`RefreshGrant`): the refresh-token grant;
* `keyturn.service.signing` (`SigningKeys`): the signing-key lifecycle;
* `keyturn.service.dpop` (`DPoPChecker`): a request's DPoP proof (RFC 9449);
* underneath them, `keyturn.service.credentials` (a secret becomes a hash and a lookup),
  `keyturn.service.issuing` (grants, access tokens, new refresh tokens) and
  `keyturn.service.families` (a refresh family revoked with its audit row).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from keyturn.core.keywrap import KeyWrapper
from keyturn.core.passwords import PasswordHasher
from keyturn.core.policy import ClaimsPolicy
from keyturn.core.revocation import RevocationList
from keyturn.core.secrets import Pepper
from keyturn.core.signing import KeySet
from keyturn.core.tokens import TokenVerifier
from keyturn.errors import PepperMismatchError
from keyturn.observer import NullObserver, ServiceObserver
from keyturn.service.audit import audit_event
from keyturn.service.client_keys import ClientKeys
from keyturn.service.config import MAX_ACCESS_TOKEN_LIFETIME, ServiceConfig, utc_now
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import Credentials
from keyturn.service.dpop import NONCE_KEY_PURPOSE, DPoPChecker, DPoPNonces
from keyturn.service.families import RefreshFamilies
from keyturn.service.issuing import (
    LOGIN_CLIENT_ID,
    PASSWORD_FACTOR,
    PASSWORD_LEVEL,
    TokenIssuer,
    TokenPair,
)
from keyturn.service.keycache import KeyCache, KeyUsage
from keyturn.service.keys import CreatedKey, KeyAdmin, KeyPage
from keyturn.service.passwords import PasswordWorker, default_password_concurrency
from keyturn.service.refreshing import RefreshGrant
from keyturn.service.sessions import PasswordLogin
from keyturn.service.signing import SigningKeys
from keyturn.service.tokens import TokenService
from keyturn.service.users import UserAdmin, UserPage
from keyturn.storage.base import ReplayRepository, Storage, StoredAuditEvent

__all__ = [
    "LOGIN_CLIENT_ID",
    "MAX_ACCESS_TOKEN_LIFETIME",
    "PASSWORD_FACTOR",
    "PASSWORD_LEVEL",
    "PEPPER_FINGERPRINT_SETTING",
    "CreatedKey",
    "KeyPage",
    "KeyturnService",
    "PasswordWorker",
    "ServiceConfig",
    "TokenPair",
    "UserPage",
    "default_password_concurrency",
    "utc_now",
]

#: The server setting holding `Pepper.fingerprint` of the pepper the stored hashes use.
PEPPER_FINGERPRINT_SETTING: Final = "pepper_fingerprint"


class KeyturnService:
    """The domain operations over a `Storage`: API keys, users, tokens, signing keys.

    Call `start()` once before serving: it checks the pepper against the database's,
    makes sure exactly one active signing key exists and loads the key set and the
    revocation state. Every other operation is one of the parts' methods, bound here
    under its historical name (``create_key`` is `KeyAdmin.create`).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        pepper: Pepper,
        key_wrapper: KeyWrapper,
        config: ServiceConfig | None = None,
        policy: ClaimsPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        password_hasher: PasswordHasher | None = None,
        password_concurrency: int | None = None,
        observer: ServiceObserver | None = None,
        replays: ReplayRepository | None = None,
    ) -> None:
        config = config or ServiceConfig()
        context = ServiceContext(
            storage=storage,
            config=config,
            policy=policy or ClaimsPolicy.default(),
            clock=clock,
            observer=observer or NullObserver(),
            revocations=RevocationList(),
            key_cache=KeyCache(config.key_cache_ttl),
            key_usage=KeyUsage(config.last_used_resolution),
        )
        self._context = context
        self._pepper = pepper
        self.passwords = PasswordWorker(
            password_hasher or PasswordHasher(), concurrency=password_concurrency
        )
        self.verifier = TokenVerifier(
            KeySet(),
            issuer=context.config.issuer,
            audience=context.config.audience,
            leeway=context.config.leeway,
            max_lifetime=context.config.access_lifetime_seconds,
            revocation=context.revocations,
            clock=lambda: context.clock().timestamp(),
        )
        self._build_parts(key_wrapper, replays or storage.replays)

    def _build_parts(self, key_wrapper: KeyWrapper, replays: ReplayRepository) -> None:
        """Build the parts and bind their operations under the service's method names."""
        context = self._context
        credentials = Credentials(context, self._pepper)
        families = RefreshFamilies(context)
        self.signing = SigningKeys(context, key_wrapper, self.verifier)
        issuer = TokenIssuer(context, self.signing, credentials)
        self.keys = KeyAdmin(context, credentials)
        self.client_keys = ClientKeys(context, self.keys, replays)
        nonces = DPoPNonces(self._pepper.derive(NONCE_KEY_PURPOSE))
        #: RFC 9449: a request's DPoP proof checked (`DPoPChecker.check`), server nonces.
        self.dpop = DPoPChecker(context, replays, nonces)
        self.users = UserAdmin(context, self.passwords)
        self.sessions = PasswordLogin(context, self.passwords, issuer, credentials, families)
        self.tokens = TokenService(
            context,
            credentials=credentials,
            issuer=issuer,
            client_keys=self.client_keys,
            families=families,
            verifier=self.verifier,
        )
        # API keys
        self.create_key = self.keys.create
        self.register_key = self.keys.register
        self.is_key_registered = self.keys.is_registered
        self.get_key = self.keys.get
        self.list_keys = self.keys.list
        self.revoke_key = self.keys.revoke
        self.rotate_key = self.keys.rotate
        self.expire_key = self.keys.expire
        self.list_public_keys = self.client_keys.list_for
        self.add_public_keys = self.client_keys.add
        self.remove_public_key = self.client_keys.remove
        # tokens
        self.authenticate = self.tokens.authenticate
        self.authenticate_client = self.tokens.authenticate_client
        self.refresh = RefreshGrant(context, credentials, issuer, families).refresh
        self.revoke_token = self.tokens.revoke_token
        self.validate = self.tokens.validate
        self.reload_revocations = self.tokens.reload_revocations
        # users and password logins
        self.create_user = self.users.create
        self.get_user = self.users.get
        self.find_user = self.users.find
        self.list_users = self.users.list
        self.disable_user = self.users.disable
        self.enable_user = self.users.enable
        self.set_user_password = self.users.set_password
        self.login = self.sessions.login
        self.logout = self.sessions.logout
        # signing keys
        self.ensure_signing_key = self.signing.ensure
        self.import_signing_key = self.signing.import_key
        self.reload_signing_keys = self.signing.reload
        self.rotate_signing_key = self.signing.rotate
        self.activate_due_signing_keys = self.signing.activate_due
        self.signing_key_age = self.signing.age
        self.list_signing_keys = self.signing.stored

    @property
    def storage(self) -> Storage:
        """The storage every part works on (replacing it reaches all of them)."""
        return self._context.storage

    @storage.setter
    def storage(self, storage: Storage) -> None:
        self._context.storage = storage
        self._context.key_cache.clear()

    @property
    def config(self) -> ServiceConfig:
        """The service's configuration."""
        return self._context.config

    @property
    def policy(self) -> ClaimsPolicy:
        """The claims policy every grant is checked against."""
        return self._context.policy

    @property
    def observer(self) -> ServiceObserver:
        """Where the service reports authentications, issues and failures."""
        return self._context.observer

    @property
    def revocations(self) -> RevocationList:
        """The in-memory revocation state the verifier consults."""
        return self._context.revocations

    @property
    def replays(self) -> ReplayRepository:
        """Where single-use ids (assertion ``jti``s) are claimed: the database by default."""
        return self.client_keys.replays

    @property
    def key_set(self) -> KeySet:
        """The keys currently trusted and published."""
        return self.signing.key_set

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Check the pepper, ensure one active signing key exists, load keys and revocations.

        Raises:
            PepperMismatchError: the database was set up with another pepper.
        """
        await self.check_pepper()
        await self.ensure_signing_key()
        await self.reload_revocations()

    async def check_pepper(self) -> None:
        """Refuse a pepper other than the one the database's hashes were made with.

        The first check on a database records this pepper's fingerprint (a database from
        before the check adopts the pepper it runs with); later checks compare with it.

        Raises:
            PepperMismatchError: the stored fingerprint is another pepper's.
        """
        mine = self._pepper.fingerprint()
        now = self._context.clock()
        stored = await self.storage.claim_setting(
            PEPPER_FINGERPRINT_SETTING,
            mine,
            at=now,
            audit=audit_event(
                "server_setting.claimed",
                PEPPER_FINGERPRINT_SETTING,
                actor=None,
                request_id=None,
                at=now,
            ),
        )
        if stored != mine:
            raise PepperMismatchError(
                "this instance's KEYTURN_PEPPER differs from the one this database was set up "
                "with (every stored API key and refresh token would be refused); give every "
                "instance the same pepper, or the same KEYTURN_PEPPER_FILE "
                "(see docs/deployment.md)"
            )

    async def audit_events(
        self,
        *,
        limit: int,
        before: int | None = None,
        action: str | None = None,
        target_id: str | None = None,
    ) -> list[StoredAuditEvent]:
        """Audit events newest first, with ids below ``before``, optionally filtered."""
        return await self.storage.audit.list(
            limit=limit, before=before, action=action, target_id=target_id
        )

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set to publish."""
        return dict(self.key_set.jwks())

    async def flush_key_usage(self) -> int:
        """Write the keys' uses noted since the last flush (``last_used_at``); how many.

        The server calls it every ``KEYTURN_POLL_INTERVAL`` and when it shuts down.
        """
        return await self._context.key_usage.flush(self.storage.keys)

    async def maintain(self) -> None:
        """Periodic upkeep: activate due signing keys, drop expired state, reload caches."""
        now = self._context.clock()
        await self.flush_key_usage()
        await self.activate_due_signing_keys()
        await self.storage.signing_keys.delete_unpublished(now=now)
        await self.storage.refresh_tokens.delete_expired(before=now)
        await self.replays.delete_expired(before=now)
        await self.reload_signing_keys()
        await self.reload_revocations()
