"""`Runtime.open`: settings become storage, secrets, policy and a started service."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyturn.config import Settings
from keyturn.errors import KeyturnError
from keyturn.runtime import Runtime


async def test_a_runtime_serves_the_service_and_closes(tmp_path: Path) -> None:
    runtime = await Runtime.open(Settings(data_dir=tmp_path))
    try:
        created = await runtime.service.create_key(name="ci")
        assert [key.id for key in (await runtime.service.list_keys()).keys] == [created.record.id]
        assert [record.state for record in await runtime.service.list_signing_keys()] == ["active"]
    finally:
        await runtime.close()

    assert (tmp_path / "keyturn.db").is_file()
    assert {"kek", "pepper"} <= {path.name for path in tmp_path.iterdir()}


async def test_the_policy_file_is_read_before_the_database_is_touched(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("[roles\n", encoding="utf-8")

    with pytest.raises(KeyturnError, match=r"policy\.toml .* is invalid: .*line 1"):
        await Runtime.open(Settings(data_dir=tmp_path / "data", policy_file=policy))

    assert not (tmp_path / "data").exists()


async def test_an_unreadable_policy_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    with pytest.raises(KeyturnError, match=r"cannot read the claims policy .*absent\.toml"):
        await Runtime.open(Settings(data_dir=tmp_path, policy_file=missing))
