"""``keyturn serve`` failing to start: one ``error:`` line that says what to do, exit 1 or 2.

Each case runs the real command (``python -m keyturn serve`` on ports picked by the
kernel) with a mistake people make, and asserts the whole first line of stderr and that
no traceback is printed (the newcomer trial's findings 2, 6, 14).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyturn.problems import shown_url
from tests.serve_fixtures import keyturn_command, server_environment

#: A server that does not fail within this many seconds has started: the test fails.
DEADLINE = 60


def serve(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``keyturn serve`` until it exits; its exit code and stderr."""
    try:
        done = subprocess.run(  # noqa: S603 -- this interpreter, fixed arguments
            keyturn_command("serve", "--port", "0", "--admin-port", "0"),
            env=server_environment({"KEYTURN_DATA_DIR": str(cwd / "data"), **env}),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # it started: the mistake went unnoticed
        pytest.fail(f"keyturn serve started instead of refusing:\n{exc.stderr!r}")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


def test_a_never_migrated_database_says_run_db_upgrade(
    empty_database_url: str, tmp_path: Path
) -> None:
    code, stderr = serve({"KEYTURN_DATABASE_URL": empty_database_url}, tmp_path)

    assert code == 1
    assert stderr.splitlines()[0] == (
        f"error: cannot start: the database {shown_url(empty_database_url)} has no Keyturn "
        "tables: run `keyturn db upgrade` (or set KEYTURN_MIGRATE_ON_START=true to migrate "
        "at start-up)"
    )


def test_a_policy_file_that_is_not_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[roles]\nreader = \n")

    code, stderr = serve({"KEYTURN_POLICY_FILE": str(policy)}, tmp_path)

    assert code == 1
    assert stderr.splitlines()[0] == (
        f"error: the claims policy {policy} (KEYTURN_POLICY_FILE) is invalid: "
        "policy is not valid TOML: Invalid value (at line 2, column 10)"
    )


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    code, stderr = serve({"KEYTURN_POLICY_FILE": str(tmp_path / "nope.toml")}, tmp_path)

    assert code == 1
    assert stderr.splitlines()[0] == (
        f"error: cannot read the claims policy {tmp_path / 'nope.toml'} "
        "(KEYTURN_POLICY_FILE): No such file or directory"
    )


def test_a_public_key_as_jwthenticators_private_key_is_told_apart(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "jwt_rsa.pub.pem"
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    code, stderr = serve({"RSA_PRIVATE_KEY_PATH": str(public)}, tmp_path)

    assert code == 1
    assert stderr.splitlines()[0] == (
        f"error: the signing key file {public} (RSA_PRIVATE_KEY_PATH): it holds "
        "a public key or certificate; a private key is needed"
    )


def test_a_truncated_private_key_is_called_damaged(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    code, stderr = serve({"KEYTURN_SIGNING_KEY_PEM": pem[:200].decode()}, tmp_path)

    assert code == 1
    assert stderr.splitlines()[0] == (
        "error: the signing key in KEYTURN_SIGNING_KEY_PEM: the PEM private key "
        "is damaged or truncated"
    )
    assert pem[40:80].decode() not in stderr  # never the key itself
