"""`keyturn.schemas`: the bodies and rules the admin API and the CLI share."""

from __future__ import annotations

import pytest

from keyturn import schemas
from keyturn.schemas import Label, RoleName, ScopeName, fits
from keyturn.server import models


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


def test_the_old_import_path_still_works() -> None:
    assert models.KeyOut is schemas.KeyOut
    assert models.MAX_TOKEN == schemas.MAX_TOKEN
