"""``keyturn keys keypair``: a device key pair for private_key_jwt and DPoP (issue 17).

Offline: no database, no data directory, no settings. The private key is written 0600
and never overwritten without ``--force``; its public half is what ``keys create
--public-key`` registers, under the same kid.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from keyturn.cli import app
from keyturn.core.assertions import load_client_public_key
from keyturn.core.signing import SigningKey

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory the command must not create."""
    directory = tmp_path / "data"
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(directory))
    return directory


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave files world-readable: the mode must not depend on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def invoke(*args: str) -> Result:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def keypair_json(*args: str) -> dict[str, Any]:
    result = invoke("keys", "keypair", *args, "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
@pytest.mark.usefixtures("open_umask")
def test_keypair_writes_a_0600_private_key_and_its_public_key_beside_it(
    tmp_path: Path, data_dir: Path, alg: str
) -> None:
    out = tmp_path / "device.pem"

    document = keypair_json("--out", str(out), "--alg", alg)

    private = SigningKey.from_pem(out.read_bytes())
    public = load_client_public_key((tmp_path / "device.pub.pem").read_bytes())
    assert (private.alg, public.alg) == (alg, alg)
    assert private.kid == public.kid == document["kid"]  # the RFC 7638 thumbprint
    assert (mode(out), mode(tmp_path / "device.pub.pem")) == (0o600, 0o644)
    assert document == {
        "kid": public.kid,
        "alg": alg,
        "private_key": str(out),
        "public_key": str(tmp_path / "device.pub.pem"),
        "next": f"keyturn keys create --public-key {tmp_path / 'device.pub.pem'}",
    }
    assert not data_dir.exists()  # a read-only command: no database, no data directory


def test_keypair_for_people_prints_the_kid_and_the_next_command(
    tmp_path: Path, data_dir: Path
) -> None:
    out = tmp_path / "sensor 17.key"

    result = invoke("keys", "keypair", "-o", str(out))

    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    public = tmp_path / "sensor 17.key.pub.pem"
    assert lines["kid"] == load_client_public_key(public.read_bytes()).kid
    assert lines["alg"] == "ES256"
    assert lines["next"] == f"keyturn keys create --public-key '{public}'"  # quoted for a shell
    assert not data_dir.exists()


@pytest.mark.parametrize("existing", ["device.pem", "device.pub.pem"])
def test_keypair_never_overwrites_without_force(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious")
    out = tmp_path / "device.pem"

    result = invoke("keys", "keypair", "--out", str(out))

    assert result.exit_code == 2
    assert f"{tmp_path / existing} exists; pass --force to overwrite it" in result.output
    assert (tmp_path / existing).read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # nothing else written


def test_keypair_refuses_a_symlink_in_the_way(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "device.pem").symlink_to(target)

    result = invoke("keys", "keypair", "--out", str(tmp_path / "device.pem"))

    assert result.exit_code == 2
    assert not target.exists()


@pytest.mark.usefixtures("open_umask")
def test_keypair_with_force_replaces_both_files(tmp_path: Path) -> None:
    out = tmp_path / "device.pem"
    first = keypair_json("--out", str(out))

    second = keypair_json("--out", str(out), "--force", "--alg", "EdDSA")

    assert second["kid"] != first["kid"]
    assert SigningKey.from_pem(out.read_bytes()).kid == second["kid"]
    assert load_client_public_key((tmp_path / "device.pub.pem").read_bytes()).kid == second["kid"]
    assert mode(out) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.pem", "device.pub.pem"]


def test_keypair_refuses_an_algorithm_keyturn_does_not_register(tmp_path: Path) -> None:
    result = invoke("keys", "keypair", "--out", str(tmp_path / "device.pem"), "--alg", "HS256")

    assert result.exit_code == 2
    assert "'HS256' is not one of" in result.output
    assert not any(tmp_path.iterdir())


def test_keypair_in_a_missing_directory_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke("keys", "keypair", "--out", str(tmp_path / "missing" / "device.pem"))

    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot write {tmp_path / 'missing' / 'device.pem'}")


def test_the_next_command_registers_the_printed_kid(tmp_path: Path, data_dir: Path) -> None:
    document = keypair_json("--out", str(tmp_path / "device.pem"))

    result = invoke(*document["next"].split()[1:], "--name", "sensor-17", "--json")

    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["key"] is None
    assert [key["kid"] for key in created["public_keys"]] == [document["kid"]]


def test_keypair_help_uses_conventional_metavars() -> None:
    result = runner.invoke(app, ["keys", "keypair", "--help"], terminal_width=200)

    cells = [line.strip("│ ").removeprefix("* ").split() for line in result.stdout.splitlines()]
    rows = {row[0]: row[1:] for row in cells if row and row[0].startswith("--")}
    assert rows["--out"][:2] == ["-o", "PATH"]
    assert rows["--alg"][0] == "ES256|EdDSA|RS256"
    assert rows["--force"][0] == "Overwrite"  # a flag: no metavar
