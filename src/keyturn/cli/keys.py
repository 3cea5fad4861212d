"""``keyturn keys``: API keys and the public keys of keyless clients."""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyturn.cli._output import (
    _ONCE_WARNING,
    JsonOption,
    KeyIdArgument,
    _check_each,
    _default_policy,
    _emit,
    _fail,
    _iso,
    _scopes_text,
    _scripted,
    _short,
    _table,
)
from keyturn.cli._runtime import _actor, _run
from keyturn.core.assertions import load_client_public_key
from keyturn.core.records import ClientPublicKeyRecord
from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.core.signing import SigningKey, VerificationKey
from keyturn.errors import SigningKeyError
from keyturn.schemas import KeyOut, Label, RoleName, ScopeName

if TYPE_CHECKING:
    from keyturn.core.records import ApiKeyRecord
    from keyturn.runtime import Runtime
    from keyturn.service import CreatedKey, KeyPage

__all__ = ["keys_app"]

keys_app = typer.Typer(
    help="Create, list, show, rotate and revoke API keys; make device key pairs.",
    no_args_is_help=True,
)


@keys_app.command("generate")
def keys_generate(as_json: JsonOption = False) -> None:
    """Print a new random API key in Keyturn's format (offline; nothing is stored)."""
    secret = generate_secret(SecretKind.API_KEY)
    _emit({"id": secret.id, "key": secret.value}, as_json)


def _key_json(record: ApiKeyRecord) -> dict[str, Any]:
    """A key as scripts see it: the admin API's `KeyOut`, and whether its hash is legacy."""
    data: dict[str, Any] = {}
    for name, value in _scripted(KeyOut.of(record)).items():
        data[name] = value
        if name == "legacy":
            # True until the key is first used after `keyturn import jwthenticator`.
            data["legacy_hash"] = record.legacy_hash
    return data


def _print_key(record: ApiKeyRecord, as_json: bool) -> None:
    data = _key_json(record)
    if as_json:
        _emit(data, as_json=True)
        return
    data["roles"] = ", ".join(record.roles) or "-"
    data["scopes"] = _scopes_text(record.scopes)
    _emit({name: "-" if value is None else value for name, value in data.items()}, False)


def _print_created(
    created: CreatedKey,
    as_json: bool,
    public_keys: list[ClientPublicKeyRecord] | None = None,
) -> None:
    if created.secret is None:  # a private_key_jwt client: nothing secret to show
        record = _key_json(created.record)
        keys = [_public_key_json(k) for k in public_keys or ()]
        if as_json:
            _emit({"key": None, "record": record, "public_keys": keys}, as_json=True)
            return
        _print_key(created.record, as_json=False)
        _print_public_keys(public_keys or [])
        return
    if as_json:
        _emit({"key": created.secret, "record": _key_json(created.record)}, as_json=True)
    else:
        typer.echo(f"key  {created.secret}")
        typer.echo("")
        _print_key(created.record, as_json=False)
    typer.echo(_ONCE_WARNING, err=True)


def _parse_instant(value: str) -> datetime:
    """An ISO 8601 date-time; without an offset it is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            "not an ISO 8601 date-time (e.g. 2030-01-31T12:00:00Z)", param_hint="--expires-at"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


#: ``keys create --dpop-required``.
DPoPRequiredOption = Annotated[
    bool,
    typer.Option(
        "--dpop-required",
        help="Its tokens need a DPoP proof (RFC 9449): it never gets a bearer token.",
    ),
]


@keys_app.command("create")
def keys_create(
    *,
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    identifier: Annotated[
        str | None, typer.Option(help="The caller's identifier (JWThenticator's UUID).")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role from the policy; repeatable.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope the key may ask for; repeatable. Without one, the key gets no "
            "scope under the default policy (with KEYTURN_POLICY_FILE: what its roles allow).",
        ),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(help="When the key stops working, ISO 8601 (UTC if no offset)."),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="A device's PUBLIC key (PEM or JWK file; ES256, EdDSA, RS256): the key then "
            "authenticates with private_key_jwt and gets no secret. Repeatable.",
        ),
    ] = None,
    dpop_required: DPoPRequiredOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create an API key and print it: the only time it is shown."""
    public_keys = _read_public_keys(public_key or ())
    _check_each("--role", role or (), RoleName, "letters, digits and _.:- (at most 64)")
    _check_each("--scope", scope or (), ScopeName, "RFC 6749 scope characters, no spaces (1-128)")
    _check_each("--name", [name or ""], Label, "at most 200 characters")
    _check_each("--identifier", [identifier or ""], Label, "at most 200 characters")
    expiry = None if expires_at is None else _parse_instant(expires_at)

    async def create(state: Runtime) -> CreatedKey:
        return await state.service.create_key(
            name=name,
            identifier=identifier,
            roles=role or (),
            scopes=scope or None,
            expires_at=expiry,
            public_keys=public_keys,
            dpop_required=dpop_required,
            actor=_actor(),
        )

    created = _run(create, create=True)
    _print_created(created, as_json, _client_keys(created, public_keys))
    if not scope and _default_policy():
        typer.echo(
            "warning: no --scope given: under the default policy this key's tokens carry no "
            "scope; create a key with --scope S (repeatable) for the scopes it needs",
            err=True,
        )


@keys_app.command("list")
def keys_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Keys per page.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="Start after this id (the previous page's next_after).")
    ] = None,
    identifier: Annotated[str | None, typer.Option(help="Only keys of this identifier.")] = None,
    include_revoked: Annotated[
        bool, typer.Option("--include-revoked/--no-include-revoked", help="Show revoked keys.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """List API keys, ordered by id, one page at a time."""

    async def page(state: Runtime) -> KeyPage:
        return await state.service.list_keys(
            limit=limit, after=after, identifier=identifier, include_revoked=include_revoked
        )

    result = _run(page)
    if as_json:
        keys = [_key_json(record) for record in result.keys]
        _emit({"keys": keys, "next_after": result.next_after}, as_json=True)
        return
    if not result.keys:
        typer.echo("no keys")
        return
    headers = (
        "id",
        "name",
        "identifier",
        "roles",
        "scopes",
        "created",
        "expires",
        "last used",
        "revoked",
        "hash",
        "dpop",
    )
    rows = [
        (
            r.id,
            r.name or "-",
            r.identifier or "-",
            ",".join(r.roles) or "-",
            _scopes_text(r.scopes),
            _short(r.created_at),
            _short(r.expires_at),
            _short(r.last_used_at),
            _short(r.revoked_at),
            # An imported JWThenticator SHA-512, re-hashed with the pepper on first use.
            "sha512" if r.legacy_hash else "hmac",
            "required" if r.dpop_required else "-",
        )
        for r in result.keys
    ]
    _table(headers, rows)
    if result.next_after is not None:
        typer.echo(f"more: keyturn keys list --after {result.next_after}")


@keys_app.command("show")
def keys_show(key_id: KeyIdArgument, as_json: JsonOption = False) -> None:
    """Show one API key (never its secret)."""

    async def get(state: Runtime) -> ApiKeyRecord:
        return await state.service.get_key(key_id)

    _print_key(_run(get), as_json)


@keys_app.command("revoke")
def keys_revoke(
    key_id: KeyIdArgument,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key; its refresh tokens die with it. Revoking twice changes nothing."""

    async def revoke(state: Runtime) -> ApiKeyRecord:
        return await state.service.revoke_key(key_id, reason=reason, actor=_actor())

    _print_key(_run(revoke), as_json)


@keys_app.command("rotate")
def keys_rotate(
    key_id: KeyIdArgument,
    grace: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=30 * 86400,
            help="Seconds the old secret keeps working (default: KEYTURN_KEY_ROTATION_GRACE).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Give an API key a new secret (same id) and print it: the only time it is shown."""
    grace_period = None if grace is None else timedelta(seconds=grace)

    async def rotate(state: Runtime) -> CreatedKey:
        return await state.service.rotate_key(key_id, grace=grace_period, actor=_actor())

    _print_created(_run(rotate), as_json)


# -- keyless clients (private_key_jwt) ---------------------------------------------------


def _read_public_keys(paths: Iterable[Path]) -> list[VerificationKey]:
    """Public keys from PEM or JWK files; a private key or a weak one is refused."""
    keys = []
    for path in paths:
        try:
            keys.append(load_client_public_key(path.read_bytes()))
        except OSError as exc:
            raise typer.BadParameter(f"{path}: {exc.strerror}", param_hint="--public-key") from exc
        except SigningKeyError as exc:
            raise typer.BadParameter(f"{path}: {exc.message}", param_hint="--public-key") from exc
    return keys


def _client_keys(
    created: CreatedKey, keys: list[VerificationKey]
) -> list[ClientPublicKeyRecord] | None:
    if not keys:
        return None
    return [
        ClientPublicKeyRecord(
            key_id=created.record.id,
            kid=key.kid,
            alg=key.alg,
            jwk=dict(key.to_jwk()),
            created_at=created.record.created_at,
        )
        for key in keys
    ]


def _public_key_json(record: ClientPublicKeyRecord) -> dict[str, Any]:
    return {
        "kid": record.kid,
        "alg": record.alg,
        "jwk": dict(record.jwk),
        "created_at": _iso(record.created_at),
    }


def _print_public_keys(records: list[ClientPublicKeyRecord]) -> None:
    if not records:
        typer.echo("no public keys")
        return
    typer.echo("")
    for record in records:
        typer.echo(f"public key  {record.kid}  {record.alg}  {_iso(record.created_at)}")


def _emit_public_keys(records: list[ClientPublicKeyRecord], as_json: bool) -> None:
    if as_json:
        _emit({"keys": [_public_key_json(k) for k in records]}, as_json=True)
    else:
        _print_public_keys(records)


@keys_app.command("public-keys")
def keys_public_keys(key_id: KeyIdArgument, as_json: JsonOption = False) -> None:
    """List the public keys an API key authenticates with (private_key_jwt)."""

    async def read(state: Runtime) -> list[ClientPublicKeyRecord]:
        return await state.service.list_public_keys(key_id)

    _emit_public_keys(_run(read), as_json)


@keys_app.command("add-public-key")
def keys_add_public_key(
    key_id: KeyIdArgument,
    files: Annotated[list[Path], typer.Argument(help="PEM or JWK files of PUBLIC keys.")],
    as_json: JsonOption = False,
) -> None:
    """Let an API key also authenticate with these public keys (e.g. to rotate a device key)."""
    keys = _read_public_keys(files)

    async def add(state: Runtime) -> list[ClientPublicKeyRecord]:
        return await state.service.add_public_keys(key_id, keys, actor=_actor())

    _emit_public_keys(_run(add), as_json)


@keys_app.command("remove-public-key")
def keys_remove_public_key(
    key_id: KeyIdArgument,
    kid: Annotated[str, typer.Argument(help="The public key's kid (its RFC 7638 thumbprint).")],
    as_json: JsonOption = False,
) -> None:
    """Stop an API key authenticating with one of its public keys."""

    async def remove(state: Runtime) -> list[ClientPublicKeyRecord]:
        await state.service.remove_public_key(key_id, kid, actor=_actor())
        return await state.service.list_public_keys(key_id)

    _emit_public_keys(_run(remove), as_json)


class DeviceAlgorithm(StrEnum):
    """The algorithms a device key pair may use (Keyturn registers no other)."""

    ES256 = "ES256"
    EdDSA = "EdDSA"
    RS256 = "RS256"


def _public_path(out: Path) -> Path:
    """Where the public half goes: ``device.pem`` -> ``device.pub.pem``."""
    if out.suffix == ".pem":
        return out.with_suffix(".pub.pem")
    return out.with_name(f"{out.name}.pub.pem")


def _write_file(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write ``data`` with ``mode`` whatever the umask; replace ``path`` only with ``force``.

    Without ``force``, O_EXCL refuses an existing file (or a symlink) atomically; with it,
    a temporary file beside ``path`` is renamed over it, so a reader never sees half a key.
    """
    if force:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(temporary, path)
    except BaseException:
        Path(temporary if force else path).unlink(missing_ok=True)
        raise


@keys_app.command("keypair")
def keys_keypair(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Write the device's PRIVATE key PEM here (mode 0600); the public key goes "
            "beside it (device.pem -> device.pub.pem).",
        ),
    ],
    alg: Annotated[
        DeviceAlgorithm, typer.Option(help="The key's algorithm (RS256: 3072 bits).")
    ] = DeviceAlgorithm.ES256,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the two files if they exist.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make a device key pair for private_key_jwt and DPoP (offline; nothing is stored).

    Register the public half with `keys create --public-key`. Needs no database or settings.
    """
    public = _public_path(out)
    if not force:
        for path in (out, public):
            if path.exists() or path.is_symlink():
                _fail(f"{path} exists; pass --force to overwrite it", exit_code=2)
    key = SigningKey.generate(alg.value)
    try:
        # The private key: 0600 whatever the umask (T-KEY-01); it never leaves the device.
        _write_file(out, key.private_pem(), 0o600, force=force)
        _write_file(public, key.verification_key.public_pem(), 0o644, force=force)
    except OSError as exc:
        _fail(f"cannot write {exc.filename or out}: {exc.strerror}", exit_code=2)
    command = f"keyturn keys create --public-key {shlex.quote(str(public))}"
    _emit(
        {
            "kid": key.kid,
            "alg": key.alg,
            "private_key": str(out),
            "public_key": str(public),
            "next": command,
        },
        as_json,
    )
