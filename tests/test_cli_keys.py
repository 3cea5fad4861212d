"""``keyturn keys ...``, ``keyturn signing-keys list|rotate`` and ``keyturn config show``.

Each test runs the commands in process against its own SQLite database in a temporary
data directory (``KEYTURN_DATA_DIR``), as an operator would on a fresh install.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from keyturn.cli import app
from keyturn.config import Settings, default_sqlite_url
from keyturn.server.state import KeyturnState
from keyturn.storage.sql import SQLStorage

runner = CliRunner()

KEY_FIELDS = {
    "id",
    "name",
    "identifier",
    "roles",
    "scopes",
    "extra_claims",
    "metadata",
    "legacy",
    "legacy_hash",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "revoked_reason",
    "rotation_grace_until",
    "dpop_required",
}
SIGNING_KEY_FIELDS = {
    "kid",
    "alg",
    "state",
    "created_at",
    "activated_at",
    "retired_at",
    "publish_until",
}
WARNING = "warning: this is the only time the key is shown; store it now."


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "data"
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(directory))
    return directory


@pytest.fixture
def server_data(data_dir: Path) -> Path:
    """A data directory a server has started on: database, KEK, pepper, signing key."""

    async def start_once() -> None:
        state = await KeyturnState.open(Settings(data_dir=data_dir), background=False)
        await state.close()

    asyncio.run(start_once())
    return data_dir


def invoke(*args: str) -> Result:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def run_json(*args: str) -> Any:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def created(data_dir: Path) -> dict[str, Any]:
    """A key made with `keys create --json`: {"key": secret, "record": {...}}."""
    document: dict[str, Any] = run_json(
        "keys",
        "create",
        "--name",
        "billing",
        "--identifier",
        "svc-billing",
        "--scope",
        "read",
        "--scope",
        "write",
        "--expires-at",
        "2999-01-31T12:00:00Z",
    )
    return document


def is_registered(key: str) -> bool:
    async def check() -> bool:
        state = await KeyturnState.open(Settings.from_environment(), background=False)
        try:
            return await state.service.is_key_registered(key)
        finally:
            await state.close()

    return asyncio.run(check())


def audit_actions(data_dir: Path) -> list[tuple[str, str | None, str | None]]:
    """(action, target_id, actor) of every audit row, oldest first."""

    async def read() -> list[tuple[str, str | None, str | None]]:
        storage = await SQLStorage.open(default_sqlite_url(data_dir))
        try:
            rows = await storage.audit.list(limit=1000)
        finally:
            await storage.close()
        return [(r.event.action, r.event.target_id, r.event.actor) for r in reversed(rows)]

    return asyncio.run(read())


def audit_at(created: dict[str, Any], action: str) -> str:
    """When the audit trail says ``action`` happened to the created key."""

    async def read() -> str:
        storage = await SQLStorage.open(Settings.from_environment().resolved_database_url)
        try:
            rows = await storage.audit.list(
                limit=1, action=action, target_id=created["record"]["id"]
            )
        finally:
            await storage.close()
        return rows[0].event.at.isoformat()

    return asyncio.run(read())


# -- keys create ---------------------------------------------------------------------------


def test_create_prints_the_key_once_and_warns_on_stderr(server_data: Path) -> None:
    result = invoke("keys", "create", "--name", "ci", "--scope", "read")

    assert result.exit_code == 0, result.output
    key_line = result.stdout.splitlines()[0]
    assert key_line.startswith("key  kt_")
    assert result.stderr.strip() == WARNING


def test_a_key_without_scopes_says_what_it_gets_under_the_default_policy(
    server_data: Path,
) -> None:
    """Finding 8: the help, the list and the warning agree with what the policy grants."""
    result = invoke("keys", "create", "--name", "ci")

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        WARNING,
        "warning: no --scope given: under the default policy this key's tokens carry no "
        "scope; create a key with --scope S (repeatable) for the scopes it needs",
    ]
    key_id = result.stdout.split("\n\n")[1].split()[1]
    row = invoke("keys", "list").stdout.splitlines()[1]
    assert row.split()[:5] == [key_id, "ci", "-", "-", "(none)"]
    assert "(policy)" not in invoke("keys", "show", key_id).stdout
    help_text = " ".join(invoke("keys", "create", "--help").stdout.split())
    assert "Without one, the key gets no scope under the default policy" in help_text.replace(
        "│ ", ""
    ).replace(" │", "")


def test_a_policy_file_makes_an_unscoped_key_follow_its_roles(
    server_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[roles.reader]\nscopes = ["read"]\n')
    monkeypatch.setenv("KEYTURN_POLICY_FILE", str(policy))

    result = invoke("keys", "create", "--role", "reader")

    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == WARNING
    assert "(roles)" in invoke("keys", "list").stdout


def test_create_json_is_the_key_and_its_record(created: dict[str, Any]) -> None:
    record = created["record"]

    assert set(created) == {"key", "record"}
    assert set(record) == KEY_FIELDS
    assert created["key"].startswith(f"kt_{record['id']}_")
    assert record["name"] == "billing"
    assert record["identifier"] == "svc-billing"
    assert record["scopes"] == ["read", "write"]
    assert record["roles"] == []
    assert record["expires_at"] == "2999-01-31T12:00:00+00:00"
    assert record["revoked_at"] is None
    assert datetime.fromisoformat(record["created_at"]).tzinfo is not None


def test_the_printed_key_is_the_stored_one(created: dict[str, Any]) -> None:
    assert is_registered(created["key"])


def test_create_takes_an_expiry_without_offset_as_utc(data_dir: Path) -> None:
    created = run_json("keys", "create", "--expires-at", "2999-06-01T08:30:00")

    assert created["record"]["expires_at"] == "2999-06-01T08:30:00+00:00"


@pytest.mark.parametrize(
    ("expires_at", "exit_code"),
    [
        pytest.param("next tuesday", 2, id="not-iso-8601"),
        pytest.param("2001-01-01T00:00:00Z", 1, id="in-the-past"),
    ],
)
def test_create_refuses_a_bad_expiry(data_dir: Path, expires_at: str, exit_code: int) -> None:
    result = invoke("keys", "create", "--expires-at", expires_at)

    assert result.exit_code == exit_code
    assert "kt_" not in result.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [
        pytest.param("--scope", "read write", id="scope-with-space"),
        pytest.param("--scope", 'say"hi"', id="scope-with-quote"),
        pytest.param("--role", "site admin", id="role-with-space"),
        pytest.param("--name", "n" * 201, id="name-too-long"),
    ],
)
def test_create_refuses_what_the_admin_api_refuses(data_dir: Path, option: str, value: str) -> None:
    result = invoke("keys", "create", option, value)

    assert result.exit_code == 2
    assert f"Invalid value for {option}" in result.stderr
    assert not data_dir.exists()  # refused before anything was opened


# -- keys list / show ----------------------------------------------------------------------


def test_list_json_is_a_page_of_records(created: dict[str, Any]) -> None:
    page = run_json("keys", "list")

    assert page == {"keys": [created["record"]], "next_after": None}


def test_list_never_shows_the_secret(created: dict[str, Any]) -> None:
    secret_part = created["key"].rsplit("_", 1)[1]

    for args in (
        ("keys", "list"),
        ("keys", "list", "--json"),
        ("keys", "show", created["record"]["id"]),
    ):
        assert secret_part not in invoke(*args).output


def test_list_for_people_is_a_table(created: dict[str, Any]) -> None:
    result = invoke("keys", "list")

    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "id",
        "name",
        "identifier",
        "roles",
        "scopes",
        "created",
        "expires",
        "last",
        "used",
        "revoked",
        "hash",
        "dpop",
    ]
    assert row.split()[:5] == [created["record"]["id"], "billing", "svc-billing", "-", "read"]
    assert row.split()[-2:] == ["hmac", "-"]
    assert "2999-01-31 12:00Z" in row


def test_list_pages_with_after(data_dir: Path) -> None:
    ids = sorted(run_json("keys", "create")["record"]["id"] for _ in range(3))

    first = run_json("keys", "list", "--limit", "2")
    second = run_json("keys", "list", "--limit", "2", "--after", first["next_after"])

    assert [k["id"] for k in first["keys"]] == ids[:2]
    assert first["next_after"] == ids[1]
    assert [k["id"] for k in second["keys"]] == ids[2:]
    assert second["next_after"] is None


def test_list_filters_by_identifier(created: dict[str, Any]) -> None:
    run_json("keys", "create", "--identifier", "someone-else")

    page = run_json("keys", "list", "--identifier", "svc-billing")

    assert [k["id"] for k in page["keys"]] == [created["record"]["id"]]


def test_list_of_an_empty_database_says_so(server_data: Path) -> None:
    result = invoke("keys", "list")

    assert result.exit_code == 0
    assert result.stdout == "no keys\n"


def test_show_prints_one_record(created: dict[str, Any]) -> None:
    key_id = created["record"]["id"]

    assert run_json("keys", "show", key_id) == created["record"]
    human = invoke("keys", "show", key_id).stdout
    assert f"id                    {key_id}\n" in human
    assert "scopes                read write\n" in human


# -- keys rotate / revoke ------------------------------------------------------------------


def test_rotate_prints_a_new_key_for_the_same_id(created: dict[str, Any]) -> None:
    key_id = created["record"]["id"]

    result = invoke("keys", "rotate", key_id, "--grace", "3600", "--json")

    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == WARNING
    rotated = json.loads(result.stdout)
    assert rotated["record"]["id"] == key_id
    assert rotated["key"].startswith(f"kt_{key_id}_")
    assert rotated["key"] != created["key"]
    grace_until = datetime.fromisoformat(rotated["record"]["rotation_grace_until"])
    rotated_at = datetime.fromisoformat(audit_at(created, "key.rotated"))
    assert (grace_until - rotated_at).total_seconds() == 3600


def test_rotate_keeps_the_old_key_working_during_the_grace(created: dict[str, Any]) -> None:
    rotated = run_json("keys", "rotate", created["record"]["id"])

    assert is_registered(rotated["key"])
    assert is_registered(created["key"])


def test_revoke_then_show_reports_the_revocation(created: dict[str, Any]) -> None:
    key_id = created["record"]["id"]

    revoked = run_json("keys", "revoke", key_id, "--reason", "leaked in a log")
    shown = run_json("keys", "show", key_id)

    assert revoked == shown
    assert shown["revoked_reason"] == "leaked in a log"
    assert datetime.fromisoformat(shown["revoked_at"]) <= datetime.now(UTC)
    assert not is_registered(created["key"])


def test_revoked_keys_can_be_left_out_of_the_list(created: dict[str, Any]) -> None:
    kept = run_json("keys", "create")["record"]["id"]
    run_json("keys", "revoke", created["record"]["id"])

    everything = run_json("keys", "list")
    live = run_json("keys", "list", "--no-include-revoked")

    assert len(everything["keys"]) == 2
    assert [k["id"] for k in live["keys"]] == [kept]


def test_a_revoked_key_cannot_be_rotated(created: dict[str, Any]) -> None:
    run_json("keys", "revoke", created["record"]["id"])

    result = invoke("keys", "rotate", created["record"]["id"])

    assert result.exit_code == 1
    assert re.fullmatch(
        rf"error: API key '{created['record']['id']}' is revoked \(since "
        r"\d{4}-\d\d-\d\dT\d\d:\d\dZ\): create a new key instead\n",
        result.stderr,
    ), result.stderr
    assert "kt_" not in result.stdout


def test_a_second_rotation_within_the_grace_is_refused(created: dict[str, Any]) -> None:
    """Finding 15: one replaced secret is kept, so a second rotation would cut the first
    one's grace short; it is refused, unless --grace 0 ends every older secret on purpose."""
    key_id = created["record"]["id"]
    first = run_json("keys", "rotate", key_id, "--grace", "3600")
    until = datetime.fromisoformat(first["record"]["rotation_grace_until"])

    result = invoke("keys", "rotate", key_id, "--grace", "3600")

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: API key '{key_id}' was rotated recently and its previous secret works until "
        f"{until.astimezone(UTC).strftime('%Y-%m-%dT%H:%MZ')}; rotating again would end that "
        "grace at once: wait until then, or rotate with a grace of 0 to end every older "
        "secret now\n"
    )
    assert is_registered(created["key"])  # the first secret keeps its grace
    assert is_registered(first["key"])
    emergency = run_json("keys", "rotate", key_id, "--grace", "0")
    assert not is_registered(created["key"])
    assert not is_registered(first["key"])
    assert is_registered(emergency["key"])


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("keys", "show"), id="show"),
        pytest.param(("keys", "revoke"), id="revoke"),
        pytest.param(("keys", "rotate"), id="rotate"),
    ],
)
def test_an_unknown_id_exits_1_with_an_error_line(
    server_data: Path, command: tuple[str, str]
) -> None:
    result = invoke(*command, "0000000000000000")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: no ")
    assert "'0000000000000000'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_change_writes_one_audit_row(created: dict[str, Any], data_dir: Path) -> None:
    key_id = created["record"]["id"]
    first_kid = run_json("signing-keys", "list")["signing_keys"][0]["kid"]
    run_json("keys", "show", key_id)
    run_json("keys", "list")
    run_json("keys", "rotate", key_id)
    run_json("keys", "revoke", key_id)
    kid = run_json("signing-keys", "rotate", "--immediately")["kid"]

    rows = audit_actions(data_dir)

    assert [(action, target) for action, target, _ in rows] == [
        ("server_setting.claimed", "pepper_fingerprint"),  # the first start-up, then
        ("signing_key.created", first_kid),  # its signing key, before the first API key
        ("key.created", key_id),
        ("key.rotated", key_id),
        ("key.revoked", key_id),
        ("signing_key.created", kid),
        ("signing_key.activated", kid),
    ]
    assert all(actor is not None and actor.startswith("cli") for _, _, actor in rows[2:])


# -- signing keys --------------------------------------------------------------------------


def test_signing_keys_list_shows_the_active_key(server_data: Path) -> None:
    listed = run_json("signing-keys", "list")["signing_keys"]

    assert len(listed) == 1
    assert set(listed[0]) == SIGNING_KEY_FIELDS
    assert listed[0]["state"] == "active"
    assert listed[0]["alg"] == "ES256"
    assert listed[0]["activated_at"] is not None


def test_signing_keys_list_for_people_is_a_table(server_data: Path) -> None:
    kid = run_json("signing-keys", "list")["signing_keys"][0]["kid"]

    header, row = invoke("signing-keys", "list").stdout.splitlines()

    assert header.split() == [
        "kid",
        "alg",
        "state",
        "created",
        "activated",
        "retired",
        "publish",
        "until",
    ]
    assert row.split()[:3] == [kid, "ES256", "active"]


def test_signing_keys_rotate_publishes_a_pending_key(server_data: Path) -> None:
    before = run_json("signing-keys", "list")["signing_keys"]

    rotated = run_json("signing-keys", "rotate")
    after = run_json("signing-keys", "list")["signing_keys"]

    assert rotated["state"] == "pending"
    assert rotated["activated_at"] is None
    delay = datetime.fromisoformat(rotated["activates_at"]) - datetime.fromisoformat(
        rotated["created_at"]
    )
    assert delay.total_seconds() == 600  # KEYTURN_SIGNING_KEY_PUBLISH_DELAY's default
    assert [(k["kid"], k["state"]) for k in after] == [
        (before[0]["kid"], "active"),
        (rotated["kid"], "pending"),
    ]


def test_signing_keys_rotate_immediately_retires_the_old_key(server_data: Path) -> None:
    old = run_json("signing-keys", "list")["signing_keys"][0]["kid"]

    rotated = run_json("signing-keys", "rotate", "--immediately")
    after = {k["kid"]: k for k in run_json("signing-keys", "list")["signing_keys"]}

    assert rotated["state"] == "active"
    assert rotated["activates_at"] is None
    assert after[old]["state"] == "retired"
    assert after[old]["publish_until"] is not None
    assert after[rotated["kid"]]["state"] == "active"


# -- settings and errors -------------------------------------------------------------------


def test_config_show_masks_secrets(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "KEYTURN_PEPPER": "cGVwcGVyLXZhbHVlLXRoYXQtbXVzdC1uZXZlci1sZWFr",
        "KEYTURN_KEK": "a2VrLXZhbHVlLXRoYXQtbXVzdC1uZXZlci1sZWFrISE",
        "KEYTURN_ADMIN_TOKEN": "admin-token-that-must-never-leak",
        "KEYTURN_DATABASE_URL": "postgresql://kt:db-password-never-leaks@db/kt",
        "KEYTURN_REDIS_URL": "redis://:redis-password-never-leaks@cache:6379/0",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    shown = run_json("config", "show")
    human = invoke("config", "show").stdout

    for name in ("pepper", "kek", "admin_token", "redis_url"):
        assert shown[name] == "**********"
    assert shown["database_url"] == "postgresql+asyncpg://kt:***@db/kt"
    for value in secrets.values():
        assert value not in human
        assert value not in json.dumps(shown)
    assert "never-leak" not in human
    assert shown["data_dir"] == str(data_dir)
    assert shown["access_token_lifetime"] == 900


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        pytest.param(
            "KEYTURN_LEEWAY",
            "9999",
            "error: invalid setting KEYTURN_LEEWAY: must be at most 300",
            id="out-of-range",
        ),
        pytest.param(
            "KEYTURN_ACCESS_TOKEN_LIFETIME",
            "-5",
            "error: invalid setting KEYTURN_ACCESS_TOKEN_LIFETIME: must be a positive number "
            "of seconds",
            id="negative-duration",
        ),
        pytest.param(
            "KEYTURN_ACCESS_TOKEN_LIFETIME",
            "15 minutes",
            "error: invalid setting KEYTURN_ACCESS_TOKEN_LIFETIME: not a duration: use whole "
            "seconds (900) or a number with a unit s, m, h or d (15m)",
            id="unparsable-duration",
        ),
        pytest.param(
            "KEYTURN_PORT",
            "9090",
            "error: unknown setting KEYTURN_PORT (did you mean KEYTURN_PUBLIC_PORT?)",
            id="listener-prefix-left-out",
        ),
        pytest.param(
            "KEYTURN_LEEWAYS",
            "1",
            "error: unknown setting KEYTURN_LEEWAYS (did you mean KEYTURN_LEEWAY?)",
            id="misspelt-name",
        ),
        pytest.param(
            "KEYTURN_LOG_LEVEL",
            "loud",
            "error: invalid setting KEYTURN_LOG_LEVEL: must be one of 'debug', 'info', "
            "'warning' or 'error'",
            id="not-one-of",
        ),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("keys", "list"), id="keys-list"),
        pytest.param(("signing-keys", "rotate"), id="signing-keys-rotate"),
        pytest.param(("config", "show"), id="config-show"),
    ],
)
def test_an_invalid_setting_exits_2_with_one_line_naming_the_variable(  # noqa: PLR0917
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    line: str,
    command: tuple[str, str],
) -> None:
    monkeypatch.setenv(name, value)

    result = invoke(*command)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == line + "\n"
    assert "pydantic" not in result.stderr
    assert not data_dir.exists()  # nothing was created


def test_someone_elses_variable_is_a_warning_not_an_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client-side variables (KEYTURN_URL & co.) are silent; an unknown name far from any
    setting is reported and ignored: it may belong to a tool around Keyturn."""
    monkeypatch.setenv("KEYTURN_URL", "http://localhost:8080")
    monkeypatch.setenv("KEYTURN_API_KEY", "kt_x_y")
    monkeypatch.setenv("KEYTURN_DASHBOARD_THEME", "dark")

    result = invoke("config", "show", "--json")

    assert result.exit_code == 0
    assert result.stderr == "warning: KEYTURN_DASHBOARD_THEME is not a Keyturn setting; ignored\n"
    assert json.loads(result.stdout)["data_dir"] == str(data_dir)


def test_a_malformed_pepper_exits_2_without_echoing_it(
    server_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYTURN_PEPPER", "c2hvcnQ")

    result = invoke("keys", "list")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: invalid settings: the pepper must be one value of at least 32 random bytes "
        "in base64url (`keyturn secrets generate` prints a KEK and a pepper)\n"
    )
    assert "c2hvcnQ" not in result.output


def test_a_hex_kek_says_which_format_is_right(
    server_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`openssl rand -hex 32` is the obvious guess; it decodes to 48 bytes, not 32."""
    monkeypatch.setenv("KEYTURN_KEK", "ab" * 32)

    result = invoke("keys", "list")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: invalid settings: a KEK must be 32 random bytes in base64url "
        "(`keyturn secrets generate` prints a KEK and a pepper)\n"
    )


def test_secrets_generate_prints_a_kek_and_pepper_the_server_accepts(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke("secrets", "generate")
    assert result.exit_code == 0
    kek_line, pepper_line = result.stdout.splitlines()
    assert kek_line.startswith("KEYTURN_KEK=")
    assert pepper_line.startswith("KEYTURN_PEPPER=")
    other = run_json("secrets", "generate")
    assert other["kek"] != kek_line.removeprefix("KEYTURN_KEK=")  # fresh each time
    monkeypatch.setenv("KEYTURN_KEK", kek_line.removeprefix("KEYTURN_KEK="))
    monkeypatch.setenv("KEYTURN_PEPPER", pepper_line.removeprefix("KEYTURN_PEPPER="))

    created = run_json("keys", "create", "--scope", "read")

    assert is_registered(created["key"])
    assert not (data_dir / "kek").exists()
    assert not (data_dir / "pepper").exists()


def test_a_pepper_the_database_was_not_set_up_with_exits_1_without_echoing_it(
    created: dict[str, Any], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database was set up with the generated pepper file; KEYTURN_PEPPER is another."""
    other = base64.urlsafe_b64encode(b"another pepper, 32 bytes or more").decode()
    monkeypatch.setenv("KEYTURN_PEPPER", other)

    result = invoke("keys", "list")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: this instance's KEYTURN_PEPPER differs from the one this database was set up with"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert other not in result.output
    assert (data_dir / "pepper").read_text().strip() not in result.output


def test_an_unreachable_database_exits_1_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYTURN_DATABASE_URL", "postgresql://kt:s3cret@127.0.0.1:1/kt")
    monkeypatch.setenv("KEYTURN_KEK", base64.urlsafe_b64encode(bytes(32)).decode())
    monkeypatch.setenv("KEYTURN_PEPPER", base64.urlsafe_b64encode(bytes(32)).decode())

    result = invoke("keys", "list")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: the database is unavailable (postgresql+asyncpg://kt:***@127.0.0.1:1/kt): "
        "connection refused\n"
    )
    assert "s3cret" not in result.output


def test_db_commands_use_jwthenticator_database_variables(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without KEYTURN_DATABASE_URL, DB_* choose the database, as for the server."""
    monkeypatch.setenv("DB_HOST", "127.0.0.1:1")
    monkeypatch.setenv("DB_PASS", "s3cret")

    result = invoke("db", "current")

    assert result.exit_code == 1
    assert "postgresql+asyncpg://postgres:***@127.0.0.1:1/jwthenticator" in result.stderr
    assert "s3cret" not in result.output


def test_config_show_says_where_each_value_came_from(
    server_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 25: the resolved database, generated secrets, and each value's source."""
    monkeypatch.setenv("PORT", "9090")
    monkeypatch.setenv("KEYTURN_ISSUER", "https://auth.example")

    shown = run_json("config", "show")
    human = {line.split()[0]: line for line in invoke("config", "show").stdout.splitlines()}

    assert shown["public_port"] == 9090
    assert shown["sources"]["public_port"] == "PORT"
    assert shown["sources"]["issuer"] == "KEYTURN_ISSUER"
    assert shown["sources"]["audience"] == "default"
    assert shown["database_url"] == f"sqlite+aiosqlite:///{server_data}/keyturn.db"
    assert shown["sources"]["database_url"] == "default: keyturn.db in data_dir"
    assert shown["migrate_on_start"] is True
    assert shown["pepper"] == "**********"
    assert shown["sources"]["pepper"] == f"generated: {server_data}/pepper"
    assert human["public_port"].split() == ["public_port", "9090", "(PORT)"]
    assert human["pepper"].split() == [
        "pepper",
        "**********",
        "(generated:",
        f"{server_data}/pepper)",
    ]
    assert (server_data / "pepper").read_text().strip() not in json.dumps(shown)


# -- keyless clients (private_key_jwt, issue 17) ----------------------------------------


def test_keys_create_with_public_keys_has_no_secret_and_lists_them(
    data_dir: Path, tmp_path: Path
) -> None:
    from keyturn.core.signing import SigningKey

    device, other = SigningKey.generate("ES256"), SigningKey.generate("EdDSA")
    pem = tmp_path / "device.pub.pem"
    pem.write_bytes(device.verification_key.public_pem())
    jwk = tmp_path / "other.jwk"
    jwk.write_text(json.dumps(dict(other.verification_key.to_jwk())))

    result = invoke("keys", "create", "--public-key", str(pem), "--public-key", str(jwk), "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["key"] is None
    assert {k["kid"] for k in document["public_keys"]} == {device.kid, other.kid}
    assert WARNING not in result.output  # nothing secret was shown
    key_id = document["record"]["id"]
    listed = run_json("keys", "public-keys", key_id)
    assert {k["kid"] for k in listed["keys"]} == {device.kid, other.kid}
    # A kid is base64url and may start with '-': it goes after '--', as documented.
    removed = invoke("keys", "remove-public-key", "--json", "--", key_id, device.kid)
    assert removed.exit_code == 0, removed.output
    after = json.loads(removed.stdout)
    assert [k["kid"] for k in after["keys"]] == [other.kid]
    readded = run_json("keys", "add-public-key", key_id, str(pem))
    assert {k["kid"] for k in readded["keys"]} == {device.kid, other.kid}
    actions = [action for action, target, _ in audit_actions(data_dir) if target == key_id]
    assert actions == ["key.created", "key.public_key_removed", "key.public_keys_added"]


def test_keys_create_refuses_a_private_key_file(data_dir: Path, tmp_path: Path) -> None:
    from keyturn.core.signing import SigningKey

    private = tmp_path / "device.pem"
    private.write_bytes(SigningKey.generate("ES256").private_pem())
    existing = run_json("keys", "create", "--name", "existing")["record"]["id"]

    result = invoke("keys", "create", "--public-key", str(private))

    assert result.exit_code == 2
    assert "private key" in result.output
    assert [key["id"] for key in run_json("keys", "list")["keys"]] == [existing]
