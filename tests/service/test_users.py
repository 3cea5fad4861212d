"""The service's user use cases: accounts, login, refresh, logout, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from tests.service.conftest import CONFIG, PEPPER, WRAPPER

from keyturn.core.passwords import PasswordHasher, PasswordParameters
from keyturn.core.policy import ClaimRule, ClaimsPolicy, RoleRule
from keyturn.core.records import AuditEvent, RefreshTokenRecord
from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.errors import (
    ConflictError,
    InvalidGrantError,
    InvalidRequestError,
    NotFoundError,
    PolicyViolation,
    RevokedTokenError,
    WeakPasswordError,
)
from keyturn.service import LOGIN_CLIENT_ID, KeyturnService, PasswordWorker
from keyturn.storage.base import Storage
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.testing import FakeClock

FAST = PasswordParameters(memory_cost=8, time_cost=1)
PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "a different long passphrase"


def make_users_service(
    storage: Storage,
    clock: FakeClock,
    *,
    parameters: PasswordParameters = FAST,
    policy: ClaimsPolicy | None = None,
) -> KeyturnService:
    return KeyturnService(
        storage,
        pepper=PEPPER,
        key_wrapper=WRAPPER,
        config=CONFIG,
        policy=policy,
        clock=clock,
        password_hasher=PasswordHasher(parameters),
        password_concurrency=2,
    )


@pytest.fixture
async def users(storage: Storage, clock: FakeClock) -> KeyturnService:
    """A started service with cheap argon2 parameters, on each backend."""
    service = make_users_service(storage, clock)
    await service.start()
    return service


@pytest.fixture
async def sqlite_users(sqlite_database_url: str, clock: FakeClock) -> AsyncIterator[KeyturnService]:
    """The same on SQLite only, for rules that do not depend on the backend."""
    storage = SQLStorage(create_engine(sqlite_database_url))
    service = make_users_service(storage, clock)
    await service.start()
    try:
        yield service
    finally:
        await storage.close()


async def test_login_issues_a_user_token_with_the_password_level(users: KeyturnService) -> None:
    user = await users.create_user("Alice@Example.com", PASSWORD, scopes=["read"])

    pair = await users.login("alice@example.com", PASSWORD)

    token = users.validate(pair.access.token)
    assert token.subject == f"user:{user.id}"
    assert token.client_id == LOGIN_CLIENT_ID
    assert token.scopes == frozenset({"read"})
    assert token.claims["level"] == 2.0
    assert token.claims["factor"] == "password"
    assert pair.refresh_token is not None


async def test_login_without_refresh_issues_only_the_access_token(
    sqlite_users: KeyturnService,
) -> None:
    await sqlite_users.create_user("alice@example.com", PASSWORD)

    pair = await sqlite_users.login("alice@example.com", PASSWORD, refresh=False)

    assert pair.refresh_token is None


async def test_a_policy_without_level_gets_no_level_claim(
    storage: Storage, clock: FakeClock
) -> None:
    policy = ClaimsPolicy(roles=(RoleRule("staff", scopes=frozenset({"read"})),))
    service = make_users_service(storage, clock, policy=policy)
    await service.start()
    await service.create_user("alice@example.com", PASSWORD, roles=["staff"])

    token = service.validate((await service.login("alice@example.com", PASSWORD)).access.token)

    assert "level" not in token.claims
    assert token.claims["roles"] == ["staff"]


async def test_a_policy_that_refuses_the_password_level_refuses_the_user(
    storage: Storage, clock: FakeClock
) -> None:
    policy = ClaimsPolicy(claims=(ClaimRule("level", allowed=frozenset({4.0})),))
    service = make_users_service(storage, clock, policy=policy)

    with pytest.raises(PolicyViolation, match="level"):
        await service.create_user("alice@example.com", PASSWORD)


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("nobody@example.com", PASSWORD, id="unknown-email"),
        pytest.param("alice@example.com", OTHER_PASSWORD, id="wrong-password"),
        pytest.param("alice@example.com", PASSWORD.upper(), id="password-case"),
        pytest.param("not an email", PASSWORD, id="not-an-address"),
        pytest.param("alice@example.com", "x" * 5000, id="longer-than-any-password"),
    ],
)
async def test_bad_credentials_fail_with_one_uniform_error(
    sqlite_users: KeyturnService, email: str, password: str
) -> None:
    await sqlite_users.create_user("alice@example.com", PASSWORD)

    with pytest.raises(InvalidGrantError) as exc_info:
        await sqlite_users.login(email, password)

    assert exc_info.value.message == "the email or password is not valid"


async def test_unknown_email_spends_a_dummy_verification(
    sqlite_users: KeyturnService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASVS 6.3.8: the unknown-email path does the same argon2 work as a wrong password."""
    calls: list[str] = []
    hasher = sqlite_users.passwords.hasher
    real_verify = hasher.verify
    monkeypatch.setattr(hasher, "verify", lambda h, p: calls.append("verify") or real_verify(h, p))

    with pytest.raises(InvalidGrantError):
        await sqlite_users.login("nobody@example.com", PASSWORD)

    assert calls == ["verify"]


async def test_failed_logins_are_counted_and_a_login_resets_them(users: KeyturnService) -> None:
    user = await users.create_user("alice@example.com", PASSWORD)
    for _ in range(2):
        with pytest.raises(InvalidGrantError):
            await users.login("alice@example.com", OTHER_PASSWORD)
    assert (await users.get_user(user.id)).failed_logins == 2

    await users.login("alice@example.com", PASSWORD)

    assert (await users.get_user(user.id)).failed_logins == 0


async def test_a_disabled_user_can_neither_log_in_nor_refresh(users: KeyturnService) -> None:
    user = await users.create_user("alice@example.com", PASSWORD)
    pair = await users.login("alice@example.com", PASSWORD)
    assert pair.refresh_token is not None

    await users.disable_user(user.id, reason="left the company")

    with pytest.raises(InvalidGrantError):
        await users.login("alice@example.com", PASSWORD)
    with pytest.raises(InvalidGrantError):
        await users.refresh(pair.refresh_token)
    with pytest.raises(RevokedTokenError):
        users.validate(pair.access.token)


async def test_a_disabled_user_cannot_refresh_even_if_the_token_was_not_revoked(
    users: KeyturnService, storage: Storage, clock: FakeClock
) -> None:
    """The refresh path checks the user itself, not only the token's revocation."""
    user = await users.create_user("alice@example.com", PASSWORD)
    await users.disable_user(user.id)
    secret = generate_secret(SecretKind.REFRESH_TOKEN)
    live_token = RefreshTokenRecord(
        id=secret.id,
        family_id=secret.id,
        token_hash=PEPPER.hash(secret.value, SecretKind.REFRESH_TOKEN),
        subject=user.subject,
        scope=(),
        created_at=clock(),
        expires_at=clock() + timedelta(days=1),
        user_id=user.id,
    )
    await storage.refresh_tokens.add(live_token, audit=AuditEvent(at=clock(), action="test"))

    with pytest.raises(InvalidGrantError):
        await users.refresh(secret.value)


async def test_enabled_again_the_user_logs_in(sqlite_users: KeyturnService) -> None:
    user = await sqlite_users.create_user("alice@example.com", PASSWORD)
    await sqlite_users.disable_user(user.id)

    enabled = await sqlite_users.enable_user(user.id)

    assert enabled.is_active
    assert (await sqlite_users.login("alice@example.com", PASSWORD)).access.token


async def test_user_refresh_tokens_rotate_and_keep_the_user_claims(users: KeyturnService) -> None:
    user = await users.create_user("alice@example.com", PASSWORD, scopes=["read", "write"])
    first = await users.login("alice@example.com", PASSWORD, scopes=["read"])
    assert first.refresh_token is not None

    second = await users.refresh(first.refresh_token)

    token = users.validate(second.access.token)
    assert token.subject == f"user:{user.id}"
    assert token.scopes == frozenset({"read"})
    assert token.claims["level"] == 2.0
    assert second.refresh_token not in (None, first.refresh_token)


async def test_reusing_a_rotated_user_token_revokes_the_family(
    sqlite_users: KeyturnService, clock: FakeClock
) -> None:
    await sqlite_users.create_user("alice@example.com", PASSWORD)
    first = await sqlite_users.login("alice@example.com", PASSWORD)
    assert first.refresh_token is not None
    second = await sqlite_users.refresh(first.refresh_token)
    assert second.refresh_token is not None
    clock.advance(minutes=1)

    with pytest.raises(InvalidGrantError):
        await sqlite_users.refresh(first.refresh_token)
    with pytest.raises(InvalidGrantError):
        await sqlite_users.refresh(second.refresh_token)


async def test_logout_revokes_the_refresh_token_family(users: KeyturnService) -> None:
    await users.create_user("alice@example.com", PASSWORD)
    first = await users.login("alice@example.com", PASSWORD)
    assert first.refresh_token is not None
    second = await users.refresh(first.refresh_token)
    assert second.refresh_token is not None

    assert await users.logout(second.refresh_token) is True

    with pytest.raises(InvalidGrantError):
        await users.refresh(second.refresh_token)
    assert await users.logout(second.refresh_token) is False  # already revoked
    assert await users.logout("ktr_not-a-token") is False


async def test_rehash_on_login_upgrades_an_old_hash(storage: Storage, clock: FakeClock) -> None:
    old = make_users_service(storage, clock, parameters=PasswordParameters(8, 1))
    await old.start()
    user = await old.create_user("alice@example.com", PASSWORD)
    assert user.password_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    upgraded = make_users_service(storage, clock, parameters=PasswordParameters(16, 2))
    await upgraded.start()

    await upgraded.login("alice@example.com", PASSWORD)

    stored = await upgraded.get_user(user.id)
    assert stored.password_hash.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert (await upgraded.login("alice@example.com", PASSWORD)).access.token
    rows = await storage.audit.list(limit=10, action="user.login")
    assert [row.event.detail["rehashed"] for row in rows] == [False, True]


async def test_the_email_is_unique_ignoring_case(users: KeyturnService) -> None:
    await users.create_user("alice@example.com", PASSWORD)

    with pytest.raises(ConflictError):
        await users.create_user("ALICE@example.COM", OTHER_PASSWORD)


async def test_weak_passwords_and_bad_emails_are_refused(sqlite_users: KeyturnService) -> None:
    with pytest.raises(WeakPasswordError):
        await sqlite_users.create_user("alice@example.com", "password123")
    with pytest.raises(InvalidRequestError):
        await sqlite_users.create_user("not-an-address", PASSWORD)
    assert (await sqlite_users.list_users()).users == []


async def test_set_password_ends_the_sessions(sqlite_users: KeyturnService) -> None:
    user = await sqlite_users.create_user("alice@example.com", PASSWORD)
    pair = await sqlite_users.login("alice@example.com", PASSWORD)
    assert pair.refresh_token is not None

    await sqlite_users.set_user_password(user.id, OTHER_PASSWORD)

    with pytest.raises(InvalidGrantError):
        await sqlite_users.refresh(pair.refresh_token)
    with pytest.raises(InvalidGrantError):
        await sqlite_users.login("alice@example.com", PASSWORD)
    assert (await sqlite_users.login("alice@example.com", OTHER_PASSWORD)).access.token


@pytest.mark.parametrize("operation", ["get", "disable", "enable", "set-password"])
async def test_unknown_user_ids_are_not_found(sqlite_users: KeyturnService, operation: str) -> None:
    calls = {
        "get": lambda: sqlite_users.get_user("nope"),
        "disable": lambda: sqlite_users.disable_user("nope"),
        "enable": lambda: sqlite_users.enable_user("nope"),
        "set-password": lambda: sqlite_users.set_user_password("nope", OTHER_PASSWORD),
    }
    with pytest.raises(NotFoundError):
        await calls[operation]()


async def test_list_users_pages_through_everything(sqlite_users: KeyturnService) -> None:
    for n in range(5):
        await sqlite_users.create_user(f"user{n}@example.com", PASSWORD)

    first = await sqlite_users.list_users(limit=3)
    second = await sqlite_users.list_users(limit=3, after=first.next_after)

    assert len(first.users) == 3
    assert second.next_after is None
    assert len({u.id for u in first.users + second.users}) == 5


async def test_passwords_never_reach_audit_rows(users: KeyturnService, storage: Storage) -> None:
    user = await users.create_user("alice@example.com", PASSWORD)
    await users.login("alice@example.com", PASSWORD)
    for email, password in [("alice@example.com", OTHER_PASSWORD), ("x@example.com", PASSWORD)]:
        with pytest.raises(InvalidGrantError):
            await users.login(email, password)
    await users.set_user_password(user.id, "yet another long passphrase")
    await users.disable_user(user.id)

    rows = await storage.audit.list(limit=100)

    text = repr([row.event for row in rows])
    assert {row.event.action for row in rows} >= {
        "user.created",
        "user.login",
        "user.login_failed",
        "user.password_changed",
        "user.disabled",
    }
    for secret in (PASSWORD, OTHER_PASSWORD, "yet another long passphrase", "$argon2id$"):
        assert secret not in text


async def test_argon2_runs_off_the_event_loop_under_the_cap() -> None:
    """While hashes are held in their threads, the loop keeps running other work."""
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow_hash() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(timeout=10)
        with lock:
            running -= 1
        return "done"

    worker = PasswordWorker(PasswordHasher(FAST), concurrency=2)
    jobs = [asyncio.create_task(worker.run(slow_hash)) for _ in range(5)]
    loop_ticks = 0
    deadline = asyncio.get_running_loop().time() + 5
    while running < 2 and asyncio.get_running_loop().time() < deadline:
        loop_ticks += 1
        await asyncio.sleep(0)

    assert running == 2  # two in threads, three queued behind the cap
    assert loop_ticks > 0  # and the loop was free meanwhile
    release.set()
    assert await asyncio.gather(*jobs) == ["done"] * 5
    assert peak == 2


def test_the_worker_refuses_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PasswordWorker(PasswordHasher(FAST), concurrency=-1)


async def test_login_times_do_not_extend_a_family(
    sqlite_users: KeyturnService, clock: FakeClock
) -> None:
    await sqlite_users.create_user("alice@example.com", PASSWORD)
    pair = await sqlite_users.login("alice@example.com", PASSWORD)
    assert pair.refresh_expires_at == clock() + timedelta(days=30)


async def test_enabling_again_does_not_revive_old_access_tokens(
    users: KeyturnService, clock: FakeClock
) -> None:
    user = await users.create_user("alice@example.com", PASSWORD)
    old = await users.login("alice@example.com", PASSWORD)
    clock.advance(1)
    await users.disable_user(user.id)
    clock.advance(1)
    await users.enable_user(user.id)
    clock.advance(1)
    new = await users.login("alice@example.com", PASSWORD)

    await users.reload_revocations()  # as every instance does from storage

    with pytest.raises(RevokedTokenError):
        users.validate(old.access.token)
    assert users.validate(new.access.token).subject == f"user:{user.id}"
