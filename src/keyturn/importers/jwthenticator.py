"""Import a JWThenticator 1.6.3 deployment: its keys, refresh tokens and RSA signing key.

JWThenticator keeps two tables (in its PostgreSQL database's default schema):

* ``keys``: ``id``, ``key_hash`` (hex SHA-512 of the key), ``identifier`` (a uuid),
  ``created``, ``expires_at`` (naive UTC);
* ``refresh_tokens``: ``id``, ``token`` (the token itself, 128 hex digits), ``key_id``,
  ``created``, ``expires_at``.

The source is read strictly read-only: one ``REPEATABLE READ, READ ONLY`` transaction, so
both tables are one consistent snapshot and nothing can be written there. Every row is
checked before anything is written to Keyturn; a half-written table, a database that is
not JWThenticator's or a signing key that did not sign its tokens stops the import with
one line, and Keyturn's database is left as it was.

What Keyturn stores (one transaction):

* each unexpired key as a legacy key record ``jwt<id>`` with its SHA-512 hash (Keyturn
  never sees the secret), identifier, created and expiry times. The service accepts the
  hash at ``/authenticate`` and ``/v1/token`` and replaces it with the peppered HMAC the
  first time the key is presented (`keyturn.service.KeyturnService`);
* each unexpired refresh token of an imported key as ``jwtrt<id>``: its peppered HMAC (the
  plaintext is read, never stored), non-rotating (JWThenticator's client keeps reusing it),
  bound to its key and identifier;
* then the RSA signing key (``RSA_PRIVATE_KEY[_PATH]``) as the active key, and the same key
  once more under JWThenticator's ``kid`` (base64url SHA-1 of its DER), retired and
  published until every token JWThenticator may have signed has expired.

Re-running is idempotent and a delta sync: records already imported are left alone, keys
whose expiry moved (re-registered in JWThenticator meanwhile) get the new expiry, and new
rows are added. Expired rows are skipped, with their reasons counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyturn.core.jwthenticator_tokens import jwthenticator_kid
from keyturn.core.keywrap import KeyWrapper
from keyturn.core.records import SigningKeyRecord, SigningKeyState
from keyturn.core.secrets import Pepper, SecretKind, is_legacy_refresh_token
from keyturn.core.signing import SigningKey, VerificationKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import KeyturnError
from keyturn.storage._errors import translate_errors
from keyturn.storage.engine import create_engine, normalize_url
from keyturn.storage.tables import api_keys, audit_events, refresh_tokens, signing_keys

__all__ = [
    "JWTHENTICATOR_LEASE",
    "ImportPlan",
    "ImportRefusedError",
    "SourceData",
    "apply_plan",
    "check_signing_key",
    "legacy_window",
    "plan_import",
    "read_existing",
    "read_source",
]

#: JWThenticator's default JWT_LEASE_TIME: its tokens live 25 hours.
JWTHENTICATOR_LEASE: Final = timedelta(hours=25)
KEY_ID_PREFIX: Final = "jwt"
TOKEN_ID_PREFIX: Final = "jwtrt"  # noqa: S105 -- an id prefix, not a secret
_HEX_HASH: Final = re.compile(r"[0-9a-fA-F]{128}")
_EXPECTED: Final = {
    "keys": frozenset({"id", "key_hash", "identifier", "created", "expires_at"}),
    "refresh_tokens": frozenset({"id", "token", "key_id", "created", "expires_at"}),
}
_CHUNK: Final = 500


class ImportRefusedError(KeyturnError):
    """The import cannot go ahead; nothing was written to Keyturn's database."""

    error_code = "import_refused"
    status_code = 400


@dataclass(frozen=True, slots=True)
class SourceKey:
    """One row of JWThenticator's ``keys``."""

    id: int
    key_hash: bytes = field(repr=False)
    identifier: str
    created: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SourceToken:
    """One row of JWThenticator's ``refresh_tokens`` (the token itself is a secret)."""

    id: int
    token: str = field(repr=False)
    key_id: int
    created: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SourceData:
    """Both tables, as one consistent snapshot."""

    keys: tuple[SourceKey, ...]
    refresh_tokens: tuple[SourceToken, ...]


@dataclass(slots=True)
class ImportPlan:
    """What an import writes; a dry run prints it and writes nothing."""

    new_keys: list[SourceKey] = field(default_factory=list)
    renewed_keys: list[SourceKey] = field(default_factory=list)
    unchanged_keys: int = 0
    new_tokens: list[SourceToken] = field(default_factory=list)
    unchanged_tokens: int = 0
    skipped_keys: dict[str, int] = field(default_factory=dict)
    skipped_tokens: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts, for people and for ``--json``."""
        return {
            "keys": {
                "new": len(self.new_keys),
                "renewed": len(self.renewed_keys),
                "unchanged": self.unchanged_keys,
                "skipped": dict(self.skipped_keys),
            },
            "refresh_tokens": {
                "new": len(self.new_tokens),
                "unchanged": self.unchanged_tokens,
                "skipped": dict(self.skipped_tokens),
            },
        }


def key_id_for(source_id: int) -> str:
    """The Keyturn id of the key JWThenticator numbered ``source_id``."""
    return f"{KEY_ID_PREFIX}{source_id}"


def token_id_for(source_id: int) -> str:
    """The Keyturn id of the refresh token JWThenticator numbered ``source_id``."""
    return f"{TOKEN_ID_PREFIX}{source_id}"


# -- reading the source ------------------------------------------------------------------


async def read_source(url: str) -> SourceData:
    """Read JWThenticator's tables at ``url`` in one read-only transaction.

    Raises:
        ImportRefusedError: not PostgreSQL, not JWThenticator's tables, or a row that
            cannot be imported (the message names the table, row and column).
        StorageUnavailableError: the database cannot be reached.
    """
    if normalize_url(url).get_backend_name() != "postgresql":
        raise ImportRefusedError("JWThenticator's database must be a postgresql:// URL")
    engine = create_engine(url, pool_size=1, max_overflow=0, schema="public")
    try:
        async with (
            translate_errors("read the JWThenticator database"),
            engine.connect() as conn,
            conn.begin(),
        ):
            # First statement of the transaction: nothing here can write, and both
            # tables are read from one snapshot.
            await conn.execute(
                sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            )
            await _check_tables(conn)
            key_rows = (
                await conn.execute(
                    sa.text(
                        "SELECT id, key_hash, identifier, created, expires_at FROM keys ORDER BY id"
                    )
                )
            ).all()
            token_rows = (
                await conn.execute(
                    sa.text(
                        "SELECT id, token, key_id, created, expires_at FROM refresh_tokens "
                        "ORDER BY id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    keys = tuple(_source_key(row) for row in key_rows)
    known = {key.id for key in keys}
    return SourceData(keys=keys, refresh_tokens=tuple(_source_token(r, known) for r in token_rows))


async def _check_tables(conn: AsyncConnection) -> None:
    rows = (
        await conn.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() "
                "AND table_name IN ('keys', 'refresh_tokens')"
            )
        )
    ).all()
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    for table, expected in _EXPECTED.items():
        if table not in columns:
            raise ImportRefusedError(
                f"not a JWThenticator database: it has no table {table!r} "
                "(JWThenticator 1.6.3 keeps keys and refresh_tokens)"
            )
        missing = sorted(expected - columns[table])
        if missing:
            raise ImportRefusedError(
                f"not a JWThenticator 1.6.3 table: {table!r} lacks column(s) {', '.join(missing)}"
            )


def _half_written(table: str, row_id: object, problem: str) -> ImportRefusedError:
    return ImportRefusedError(
        f"half-written table {table!r}: row id {row_id} {problem}; nothing was imported"
    )


def _utc(value: object, table: str, row_id: object, column: str) -> datetime:
    if not isinstance(value, datetime):
        raise _half_written(table, row_id, f"has no {column}")
    # JWThenticator stores naive UTC (its DateTimeMixin strips the zone).
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _source_key(row: Sequence[Any]) -> SourceKey:
    row_id, key_hash, identifier, created, expires_at = row
    if not isinstance(key_hash, str) or _HEX_HASH.fullmatch(key_hash) is None:
        raise _half_written("keys", row_id, "has no usable key_hash (128 hex digits expected)")
    if identifier is None or not str(identifier).strip():
        raise _half_written("keys", row_id, "has no identifier")
    expires = _utc(expires_at, "keys", row_id, "expires_at")
    made = expires if created is None else _utc(created, "keys", row_id, "created")
    return SourceKey(
        id=int(row_id),
        key_hash=bytes.fromhex(key_hash),
        identifier=_canonical_identifier(identifier),
        created=made,
        expires_at=expires,
    )


def _canonical_identifier(value: object) -> str:
    import uuid  # noqa: PLC0415 -- only here

    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:  # JWThenticator only stores uuids; keep anything else as it is
        return str(value)


def _source_token(row: Sequence[Any], known_keys: set[int]) -> SourceToken:
    row_id, token, key_id, created, expires_at = row
    if not isinstance(token, str) or not is_legacy_refresh_token(token):
        raise _half_written("refresh_tokens", row_id, "has no usable token (128 hex digits)")
    if key_id is None or int(key_id) not in known_keys:
        raise _half_written("refresh_tokens", row_id, "names no key in table 'keys'")
    expires = _utc(expires_at, "refresh_tokens", row_id, "expires_at")
    made = expires if created is None else _utc(created, "refresh_tokens", row_id, "created")
    return SourceToken(
        id=int(row_id), token=token, key_id=int(key_id), created=made, expires_at=expires
    )


# -- the signing key -----------------------------------------------------------------------


def check_signing_key(
    pem: bytes | str,
    *,
    check_jwt: str | None = None,
    public_pem: bytes | str | None = None,
) -> tuple[SigningKey, str]:
    """Load JWThenticator's RSA private key; return it and its JWThenticator ``kid``.

    ``check_jwt`` (a token JWThenticator issued, expired or not) and ``public_pem``
    (JWThenticator's ``RSA_PUBLIC_KEY[_PATH]``) are checked against it when given.

    Raises:
        ImportRefusedError: not an RSA private key, or it did not sign the tokens.
    """
    try:
        key = SigningKey.from_pem(pem)
    except KeyturnError as exc:
        raise ImportRefusedError(f"the signing key is unusable: {exc.message}") from exc
    public = key.verification_key.public_key
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    if key.alg != "RS256" or not isinstance(public, rsa.RSAPublicKey):
        raise ImportRefusedError(
            f"the signing key is {key.alg}, not the RSA key JWThenticator signs with"
        )
    legacy_kid = jwthenticator_kid(public)
    if public_pem is not None:
        try:
            expected = VerificationKey.from_pem(public_pem)
        except KeyturnError as exc:
            raise ImportRefusedError(
                f"JWThenticator's public key is unusable: {exc.message}"
            ) from exc
        if (
            not isinstance(expected.public_key, rsa.RSAPublicKey)
            or jwthenticator_kid(expected.public_key) != legacy_kid
        ):
            raise ImportRefusedError(
                "the signing key does not match JWThenticator's public key "
                "(RSA_PUBLIC_KEY[_PATH]): its tokens would not validate"
            )
    if check_jwt is not None:
        _check_token_kid(check_jwt, key, legacy_kid)
    return key, legacy_kid


def _check_token_kid(token: str, key: SigningKey, legacy_kid: str) -> None:
    try:
        header, _ = peek_unverified_claims(token.strip())
    except KeyturnError as exc:
        raise ImportRefusedError(f"--check-jwt is not a JWT: {exc.message}") from exc
    kid = header.get("kid")
    if kid != legacy_kid:
        raise ImportRefusedError(
            f"the signing key does not match the tokens: they carry kid {kid!r}, "
            f"this key's JWThenticator kid is {legacy_kid!r}"
        )
    head, payload, signature = token.strip().split(".")
    from keyturn.core._encoding import b64url_decode  # noqa: PLC0415

    if not key.verification_key.verify(f"{head}.{payload}".encode(), b64url_decode(signature)):
        raise ImportRefusedError(
            f"the token's kid is {kid!r}, but this key did not sign it (signature mismatch)"
        )


def legacy_window(access_token_lifetime: timedelta, leeway: int) -> timedelta:
    """How long JWThenticator's kid stays published after an import: its longest token."""
    return max(access_token_lifetime, JWTHENTICATOR_LEASE) + timedelta(seconds=leeway)


# -- planning against Keyturn's database ----------------------------------------------------


async def read_existing(
    engine: AsyncEngine, data: SourceData
) -> tuple[dict[str, datetime | None], set[str]]:
    """Which of the source's rows Keyturn already holds: key ids (with expiry), token ids."""
    key_ids = [key_id_for(key.id) for key in data.keys]
    token_ids = [token_id_for(token.id) for token in data.refresh_tokens]
    keys: dict[str, datetime | None] = {}
    tokens: set[str] = set()
    async with translate_errors("read Keyturn's database"), engine.connect() as conn:
        for chunk in _chunks(key_ids):
            rows = await conn.execute(
                sa.select(api_keys.c.id, api_keys.c.expires_at).where(api_keys.c.id.in_(chunk))
            )
            keys.update({row.id: row.expires_at for row in rows})
        for chunk in _chunks(token_ids):
            rows = await conn.execute(
                sa.select(refresh_tokens.c.id).where(refresh_tokens.c.id.in_(chunk))
            )
            tokens.update(row.id for row in rows)
    return keys, tokens


def plan_import(
    data: SourceData,
    *,
    existing_keys: Mapping[str, datetime | None],
    existing_tokens: set[str],
    now: datetime,
) -> ImportPlan:
    """Decide, row by row, what to add, renew, leave, or skip (and why). No I/O."""
    plan = ImportPlan()
    importable: set[int] = set()
    for key in data.keys:
        stored = key_id_for(key.id) in existing_keys
        if stored:
            importable.add(key.id)
            if existing_keys[key_id_for(key.id)] != key.expires_at:
                plan.renewed_keys.append(key)
            else:
                plan.unchanged_keys += 1
        elif key.expires_at <= now:
            _count(plan.skipped_keys, "expired")
        else:
            importable.add(key.id)
            plan.new_keys.append(key)
    for token in data.refresh_tokens:
        if token_id_for(token.id) in existing_tokens:
            plan.unchanged_tokens += 1
        elif token.expires_at <= now:
            _count(plan.skipped_tokens, "expired")
        elif token.key_id not in importable:
            _count(plan.skipped_tokens, "its key expired")
        else:
            plan.new_tokens.append(token)
    return plan


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- writing -----------------------------------------------------------------------------------


async def apply_plan(
    engine: AsyncEngine,
    plan: ImportPlan,
    *,
    identifiers: Mapping[int, str],
    pepper: Pepper,
    now: datetime,
    actor: str,
    progress: Callable[[int], None] = lambda done: None,
) -> None:
    """Write ``plan`` to Keyturn's database in one transaction (all of it, or nothing)."""
    key_rows = [_key_values(key, now) for key in plan.new_keys]
    token_rows = [
        _token_values(token, identifiers[token.key_id], pepper) for token in plan.new_tokens
    ]
    renew = sa.update(api_keys).where(api_keys.c.id == sa.bindparam("key_id"))
    async with translate_errors("store the imported keys"), engine.begin() as conn:
        for chunk in _chunks(key_rows):
            await conn.execute(api_keys.insert(), list(chunk))
            progress(len(chunk))
        for key in plan.renewed_keys:
            await conn.execute(
                renew.values(expires_at=key.expires_at), {"key_id": key_id_for(key.id)}
            )
            progress(1)
        for chunk in _chunks(token_rows):
            await conn.execute(refresh_tokens.insert(), list(chunk))
            progress(len(chunk))
        await conn.execute(
            audit_events.insert(),
            {
                "at": now,
                "action": "jwthenticator.imported",
                "outcome": "success",
                "actor": actor,
                "target_type": "import",
                "target_id": None,
                "request_id": None,
                "detail": plan.summary(),
            },
        )


def _key_values(key: SourceKey, now: datetime) -> dict[str, Any]:
    return {
        "id": key_id_for(key.id),
        "key_hash": key.key_hash,  # SHA-512: re-hashed with the pepper on first use
        "identifier": key.identifier,
        "name": None,
        "roles": [],
        "scopes": None,
        "extra_claims": {},
        "metadata": {"imported_from": "jwthenticator", "jwthenticator_id": key.id},
        "legacy": True,
        "created_at": min(key.created, now),
        "expires_at": key.expires_at,
        "last_used_at": None,
        "revoked_at": None,
        "revoked_reason": None,
        "previous_hash": None,
        "previous_expires_at": None,
    }


def _token_values(token: SourceToken, identifier: str, pepper: Pepper) -> dict[str, Any]:
    token_id = token_id_for(token.id)
    return {
        "id": token_id,
        "family_id": token_id,
        "parent_id": None,
        "token_hash": pepper.hash(token.token, SecretKind.REFRESH_TOKEN),
        "subject": f"key:{key_id_for(token.key_id)}",
        "scope": [],
        "rotating": False,  # JWThenticator's client reuses its first refresh token
        "key_id": key_id_for(token.key_id),
        "user_id": None,
        "identifier": identifier,
        "created_at": token.created,
        "expires_at": token.expires_at,
        "used_at": None,
        "replaced_by": None,
        "revoked_at": None,
    }


async def publish_legacy_kid(
    engine: AsyncEngine,
    key: SigningKey,
    legacy_kid: str,
    *,
    key_wrapper: KeyWrapper,
    now: datetime,
    until: datetime,
) -> None:
    """Publish ``key`` under JWThenticator's ``kid`` until ``until`` (verification only).

    Stored retired, so it never signs; a second import moves ``until`` later, never earlier.
    """
    alias = VerificationKey.from_public_key(
        key.verification_key.public_key, alg=key.alg, kid=legacy_kid
    )
    record = SigningKeyRecord(
        kid=legacy_kid,
        alg=key.alg,
        public_jwk=dict(alias.to_jwk()),
        sealed_private_key=key_wrapper.seal(legacy_kid, key.private_pem()),
        state=SigningKeyState.RETIRED,
        created_at=now,
        retired_at=now,
        publish_until=until,
    )
    async with translate_errors("publish JWThenticator's key id"), engine.begin() as conn:
        stored = (
            await conn.execute(
                sa.select(signing_keys.c.publish_until).where(signing_keys.c.kid == legacy_kid)
            )
        ).first()
        if stored is None:
            await conn.execute(
                signing_keys.insert(),
                {
                    "kid": record.kid,
                    "alg": record.alg,
                    "public_jwk": dict(record.public_jwk),
                    "sealed_private_key": record.sealed_private_key,
                    "state": record.state.value,
                    "created_at": record.created_at,
                    "activated_at": None,
                    "retired_at": record.retired_at,
                    "publish_until": record.publish_until,
                },
            )
        elif stored.publish_until is None or stored.publish_until < until:
            await conn.execute(
                sa.update(signing_keys)
                .where(signing_keys.c.kid == legacy_kid)
                .values(publish_until=until)
            )
