"""`keyturn.schemas`: the bodies and rules the admin API and the CLI share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyturn import schemas
from keyturn.cli import _output as cli_output
from keyturn.cli import keys as cli_keys
from keyturn.core.records import ApiKeyRecord, UserRecord
from keyturn.schemas import KeyOut, Label, RoleName, ScopeName, UserOut, fits


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        pytest.param(ScopeName, "read:all", True, id="scope"),
        pytest.param(ScopeName, "a" * 128, True, id="scope-128"),
        pytest.param(ScopeName, "a" * 129, False, id="scope-129"),
        pytest.param(ScopeName, "a b", False, id="scope-space"),
        pytest.param(ScopeName, 'a"b', False, id="scope-quote"),
        pytest.param(ScopeName, "", False, id="scope-empty"),
        pytest.param(RoleName, "ops.admin-1:x_y", True, id="role"),
        pytest.param(RoleName, "a" * 65, False, id="role-65"),
        pytest.param(RoleName, "ops/admin", False, id="role-slash"),
        pytest.param(Label, "", True, id="label-empty"),
        pytest.param(Label, "x\ny" * 66, True, id="label-200-newlines"),
        pytest.param(Label, "x" * 201, False, id="label-201"),
    ],
)
def test_fits_applies_the_rules_the_admin_api_validates_with(
    kind: object, value: str, ok: bool
) -> None:
    assert fits(kind, value) is ok


def test_create_key_request_uses_the_same_rules() -> None:
    assert fits(ScopeName, "a b") is False
    with pytest.raises(ValueError, match="scopes"):
        schemas.CreateKeyRequest.model_validate({"scopes": ["a b"]})


AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = ApiKeyRecord(
    id="Xq3Vb9kLmP2rT5wZ",
    key_hash=b"\x01" * 64,
    created_at=AT,
    identifier="7d3c9b1e-5f0a-4c61-9a4e-2b8f6a0d1c55",
    name="billing",
    roles=("reader",),
    scopes=("read", "write"),
    extra_claims={"tenant": "acme"},
    legacy=True,
    previous_expires_at=AT + timedelta(hours=1),
)
USER = UserRecord(
    id="Ua7Kp2Qx9Lm4Rt6W",
    email="Ada@example.com",
    email_key="ada@example.com",
    password_hash="$argon2id$...",
    created_at=AT,
    failed_logins=2,
)


def _instants_as_cli(body: dict[str, Any]) -> dict[str, Any]:
    """The API's ``...Z`` instants in the CLI's ``...+00:00`` spelling."""
    return {
        name: value.replace("Z", "+00:00")
        if isinstance(value, str) and name.endswith(("_at", "_until"))
        else value
        for name, value in body.items()
    }


def test_the_cli_prints_a_key_as_the_admin_api_shows_it_plus_its_hash_kind() -> None:
    api = KeyOut.of(KEY).model_dump(mode="json")
    printed = cli_keys._key_json(KEY)

    assert printed.pop("legacy_hash") is True
    assert printed == _instants_as_cli(api)
    assert list(printed) == list(api)  # the same fields in the same order


def test_the_cli_prints_a_user_as_the_admin_api_shows_it() -> None:
    api = UserOut.of(USER).model_dump(mode="json")

    assert cli_output._scripted(UserOut.of(USER)) == _instants_as_cli(api)
    assert "password_hash" not in api
