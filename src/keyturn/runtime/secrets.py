"""The server's own secrets: key-encryption keys (KEKs) and the secret-hashing pepper.

Each comes from, in order: a value (an environment variable, base64url), a file named by
the operator, or -- the zero-setup default -- a file Keyturn generates in its data
directory on first start. Generated files are created with mode 0600 in a 0700
directory, written completely before they appear (temp file, fsync, hard link), and
never overwritten; an existing file readable by others is refused (T-KEY-01/02).

Several instances sharing one PostgreSQL database must share these values too (set
``KEYTURN_KEK`` and ``KEYTURN_PEPPER``, or point every instance at the same files).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyturn.core.keywrap import KEK_BYTES, KeyEncryptionKey, KeyWrapper
from keyturn.core.secrets import MIN_PEPPER_BYTES, Pepper
from keyturn.errors import KeyturnError

__all__ = ["ServerSecrets", "ServerSecretsError", "load_server_secrets"]

KEK_FILE_NAME: Final = "kek"
# What a malformed value's message suggests (`openssl rand -hex 32` is hex, not base64url).
_HINT: Final = "`keyturn secrets generate` prints a KEK and a pepper"
PEPPER_FILE_NAME: Final = "pepper"


class ServerSecretsError(KeyturnError):
    """A KEK or pepper is missing, malformed, or stored with unsafe permissions."""


@dataclass(frozen=True, slots=True)
class ServerSecrets:
    """What the service needs to seal signing keys and hash API keys."""

    key_wrapper: KeyWrapper
    pepper: Pepper


def load_server_secrets(
    data_dir: Path,
    *,
    kek: str | None = None,
    kek_file: Path | None = None,
    pepper: str | None = None,
    pepper_file: Path | None = None,
    create: bool = True,
) -> ServerSecrets:
    """Load the KEKs and the pepper, generating missing ones in ``data_dir`` if allowed.

    ``kek`` may hold several comma-separated keys: the first seals, all open (KEK
    rotation). A KEK file may likewise hold one key per line.

    Raises:
        ServerSecretsError: a value is malformed, a file is unsafe or unreadable, or a
            secret is missing and ``create`` is False.
    """
    kek_values = _values(
        kek, kek_file, data_dir / KEK_FILE_NAME, size=KEK_BYTES, create=create, what="KEK"
    )
    pepper_values = _values(
        pepper,
        pepper_file,
        data_dir / PEPPER_FILE_NAME,
        size=MIN_PEPPER_BYTES,
        create=create,
        what="pepper",
    )
    keks = []
    for value in kek_values:
        if len(value) != KEK_BYTES:
            raise ServerSecretsError(
                f"a KEK must be {KEK_BYTES} random bytes in base64url ({_HINT})"
            )
        keks.append(KeyEncryptionKey(value))
    if len(pepper_values) != 1 or len(pepper_values[0]) < MIN_PEPPER_BYTES:
        raise ServerSecretsError(
            f"the pepper must be one value of at least {MIN_PEPPER_BYTES} random bytes in "
            f"base64url ({_HINT})"
        )
    return ServerSecrets(key_wrapper=KeyWrapper(keks), pepper=Pepper(pepper_values[0]))


def _values(
    value: str | None,
    path: Path | None,
    default_path: Path,
    *,
    size: int,
    create: bool,
    what: str,
) -> list[bytes]:
    if value is not None:
        return _decode_all(value.replace(",", "\n"), what, "the environment")
    if path is not None:
        return _decode_all(_read_private(path, what), what, str(path))
    if not default_path.exists():
        if not create:
            raise ServerSecretsError(f"no {what} configured and {default_path} does not exist")
        _create_private(default_path, _encode(secrets.token_bytes(size)) + "\n")
    return _decode_all(_read_private(default_path, what), what, str(default_path))


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode_all(text: str, what: str, where: str) -> list[bytes]:
    values = []
    for line in text.splitlines():
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        try:
            values.append(base64.urlsafe_b64decode(item + "=" * (-len(item) % 4)))
        except (binascii.Error, ValueError) as exc:
            # Never echo the value: it is a secret, even when malformed.
            raise ServerSecretsError(f"the {what} in {where} is not base64url ({_HINT})") from exc
    if not values:
        raise ServerSecretsError(f"no {what} found in {where}")
    return values


def _read_private(path: Path, what: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ServerSecretsError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "r", encoding="ascii") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ServerSecretsError(
                f"the {what} file {path} is accessible to other users "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        try:
            return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ServerSecretsError(f"cannot read the {what} file {path}") from exc


def _create_private(path: Path, content: str) -> None:
    """Create ``path`` with ``content`` atomically, mode 0600; keep a file that won a race."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another instance created it first
            os.link(temp, path)  # appears complete, or not at all; never overwrites
    finally:
        temp.unlink(missing_ok=True)
