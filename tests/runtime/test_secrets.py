"""Loading and generating the server's KEKs and pepper (T-KEY-01/02/03)."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keyturn.core.secrets import SecretKind
from keyturn.runtime.secrets import ServerSecretsError, load_server_secrets


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 000, the worst case for files created without explicit modes."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_generated_secrets_are_private_files(tmp_path: Path) -> None:
    """T-KEY-01: 0600 files in a 0700 directory, even under umask 000."""
    data_dir = tmp_path / "data"

    load_server_secrets(data_dir)

    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("kek", "pepper"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []


def test_generated_secrets_survive_a_restart(tmp_path: Path) -> None:
    first = load_server_secrets(tmp_path)
    second = load_server_secrets(tmp_path)

    sealed = first.key_wrapper.seal("kid-1", b"private key")
    assert second.key_wrapper.open("kid-1", sealed) == b"private key"
    assert first.pepper.hash("k", SecretKind.API_KEY) == second.pepper.hash("k", SecretKind.API_KEY)


def test_instances_racing_on_an_empty_directory_agree(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda _: load_server_secrets(tmp_path), range(8)))

    hashes = {s.pepper.hash("k", SecretKind.API_KEY) for s in loaded}
    assert len(hashes) == 1
    sealed = loaded[0].key_wrapper.seal("kid", b"x")
    assert all(s.key_wrapper.open("kid", sealed) == b"x" for s in loaded)


def test_a_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """T-KEY-02."""
    load_server_secrets(tmp_path)
    (tmp_path / "kek").chmod(0o644)

    with pytest.raises(ServerSecretsError, match="chmod 600"):
        load_server_secrets(tmp_path)


def test_values_from_the_environment_win_and_create_nothing(tmp_path: Path) -> None:
    kek, pepper = b64(b"k" * 32), b64(b"p" * 40)

    secrets = load_server_secrets(tmp_path / "unused", kek=kek, pepper=pepper)

    assert not (tmp_path / "unused").exists()
    assert secrets.pepper.hash("k", SecretKind.API_KEY) == load_server_secrets(
        tmp_path, kek=kek, pepper=pepper
    ).pepper.hash("k", SecretKind.API_KEY)


def test_several_keks_let_old_ciphertexts_open(tmp_path: Path) -> None:
    old, new = b64(b"o" * 32), b64(b"n" * 32)
    pepper = b64(b"p" * 32)
    sealed_by_old = load_server_secrets(tmp_path, kek=old, pepper=pepper).key_wrapper.seal(
        "kid", b"secret"
    )

    rotated = load_server_secrets(tmp_path, kek=f"{new},{old}", pepper=pepper).key_wrapper

    assert rotated.open("kid", sealed_by_old) == b"secret"
    assert (
        load_server_secrets(tmp_path, kek=new, pepper=pepper).key_wrapper.open(
            "kid", rotated.seal("kid", b"secret")
        )
        == b"secret"
    )


@pytest.mark.parametrize(
    ("kek", "pepper", "message"),
    [
        pytest.param("not base64 !!", None, "not base64url", id="kek-garbage"),
        pytest.param(b64(b"short"), None, "must be 32 random bytes in base64url", id="kek-short"),
        pytest.param(
            None, b64(b"short"), "at least 32 random bytes in base64url", id="pepper-short"
        ),
        pytest.param(" ", None, "no KEK found", id="kek-empty"),
    ],
)
def test_bad_values_are_refused_without_echoing_them(
    tmp_path: Path, kek: str | None, pepper: str | None, message: str
) -> None:
    with pytest.raises(ServerSecretsError, match=message) as exc_info:
        load_server_secrets(tmp_path, kek=kek, pepper=pepper)

    for value in (kek, pepper):
        if value and value.strip():
            assert value not in str(exc_info.value)


def test_missing_secrets_without_create_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ServerSecretsError, match="does not exist"):
        load_server_secrets(tmp_path, create=False)


def test_secret_files_named_by_the_operator(tmp_path: Path) -> None:
    kek_file, pepper_file = tmp_path / "kek.txt", tmp_path / "pepper.txt"
    for path, value in ((kek_file, b"k" * 32), (pepper_file, b"p" * 32)):
        path.write_text(f"# managed by ops\n{b64(value)}\n")
        path.chmod(0o600)

    secrets = load_server_secrets(tmp_path / "data", kek_file=kek_file, pepper_file=pepper_file)

    assert secrets.key_wrapper.open("a", secrets.key_wrapper.seal("a", b"z")) == b"z"
    assert not (tmp_path / "data").exists()
