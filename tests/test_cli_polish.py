"""The newcomer trial's CLI polish: --help metavars, -V, human token times (findings 20, 23, 24)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner, Result

from keyturn.__about__ import __version__
from keyturn.cli import app

runner = CliRunner()


def invoke(*args: str) -> Result:
    result = runner.invoke(app, list(args), terminal_width=200)
    assert "Traceback" not in result.output
    return result


def unsigned_jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256', 'typ': 'JWT', 'kid': 'k1'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param((), id="keyturn"),
        pytest.param(("serve",), id="serve"),
        pytest.param(("keys", "create"), id="keys-create"),
        pytest.param(("keys", "list"), id="keys-list"),
        pytest.param(("users", "add"), id="users-add"),
        pytest.param(("db", "upgrade"), id="db-upgrade"),
    ],
)
def test_help_shows_conventional_metavars_not_python_types(command: tuple[str, ...]) -> None:
    result = invoke(*command, "--help")

    assert result.exit_code == 0
    for python_type in ("<bool>", "<int>", "<str>", "list[str]", "<Path>", "<int range>"):
        assert python_type not in result.stdout


def test_options_read_text_integer_and_flags_take_no_metavar() -> None:
    rows = {
        line.split()[1]: line.split()[2:]
        for line in invoke("keys", "list", "--help").stdout.splitlines()
        if line.startswith("│ --")
    }

    assert rows["--limit"][0] == "INTEGER"
    assert rows["--after"][0] == "TEXT"
    assert rows["--json"][:3] == ["Print", "JSON", "for"]  # a flag: no type at all
    role = next(
        line for line in invoke("keys", "create", "--help").stdout.splitlines() if "--role" in line
    )
    assert role.split()[1:3] == ["--role", "TEXT"]


def test_serve_help_points_at_the_settings() -> None:
    text = " ".join(invoke("serve", "--help").stdout.split())

    assert (
        "Every setting is a KEYTURN_* variable (docs/configuration.md); `keyturn config show`"
        in (text)
    )


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_has_a_short_flag(flag: str) -> None:
    result = invoke(flag)

    assert (result.exit_code, result.stdout) == (0, f"keyturn {__version__}\n")


def test_the_cli_module_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keyturn.cli", "-V"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert (done.returncode, done.stdout) == (0, f"keyturn {__version__}\n")


def test_token_inspect_shows_human_times_beside_the_claims() -> None:
    now = int(time.time())
    token = unsigned_jwt({"iat": now - 3 * 86400 - 60, "exp": now + 10 * 86400 + 60})

    lines = invoke("token", "inspect", token).stdout.splitlines()
    times = {line.split()[0]: line for line in lines if line.split()[0] in ("iat", "exp")}

    assert times["iat"].endswith("(3 days ago)")
    assert times["exp"].endswith("(expires in 10 days)")
    issued = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now - 3 * 86400 - 60))
    assert times["iat"].split(maxsplit=1)[1].startswith(issued)


def test_an_expired_token_says_how_long_ago() -> None:
    token = unsigned_jwt({"exp": int(time.time()) - 90 * 60 - 5})

    exp = next(
        line for line in invoke("token", "inspect", token).stdout.splitlines() if line[:3] == "exp"
    )

    assert exp.endswith("(expired 90 min ago)")


def test_token_inspect_json_is_unchanged() -> None:
    token = unsigned_jwt({"exp": 2000000000})

    document = json.loads(invoke("token", "inspect", token, "--json").stdout)

    assert document == {
        "verified": False,
        "header": {"alg": "ES256", "typ": "JWT", "kid": "k1"},
        "claims": {"exp": 2000000000},
    }
