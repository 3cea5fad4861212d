"""``keyturn users``: people who log in with an email and a password."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from keyturn.cli._output import (
    JsonOption,
    PasswordStdinOption,
    UserArgument,
    _check_each,
    _emit,
    _fail,
    _scopes_text,
    _scripted,
    _short,
    _table,
)
from keyturn.cli._runtime import _actor, _run
from keyturn.schemas import RoleName, ScopeName, UserOut

if TYPE_CHECKING:
    from keyturn.core.records import UserRecord
    from keyturn.runtime import Runtime
    from keyturn.service import KeyturnService, UserPage

__all__ = ["users_app"]

users_app = typer.Typer(
    help="Add, list, disable and enable people who log in with a password.", no_args_is_help=True
)


def _print_user(record: UserRecord, as_json: bool) -> None:
    data = _scripted(UserOut.of(record))
    if not as_json:
        data["roles"] = ", ".join(record.roles) or "-"
        data["scopes"] = _scopes_text(record.scopes)
        data = {name: "-" if value is None else value for name, value in data.items()}
    _emit(data, as_json)


def _read_password(from_stdin: bool) -> str:
    """The new password: typed twice without echo, or the first line of standard input.

    Never a command-line argument, which other users can read in the process list.
    """
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            _fail("no password on standard input", 2)
        return password
    if not _has_terminal():
        _fail("no terminal to type the password on: pipe it in with --password-stdin", 2)
    typed: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return typed


def _has_terminal() -> bool:
    """Whether a password can be typed without echo (standard input is a terminal)."""
    return sys.stdin.isatty()


async def _resolve_user(service: KeyturnService, user: str) -> UserRecord:
    return await (service.find_user(user) if "@" in user else service.get_user(user))


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The email address the person logs in with.")],
    *,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role from the policy; repeatable.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope the user's tokens may carry; repeatable."),
    ] = None,
    password_stdin: PasswordStdinOption = False,
    as_json: JsonOption = False,
) -> None:
    """Add a user; the password is prompted for (or read with --password-stdin)."""
    _check_each("--role", role or (), RoleName, "letters, digits and _.:- (at most 64)")
    _check_each("--scope", scope or (), ScopeName, "RFC 6749 scope characters, no spaces (1-128)")
    password = _read_password(password_stdin)

    async def add(state: Runtime) -> UserRecord:
        return await state.service.create_user(
            email, password, roles=role or (), scopes=scope or None, actor=_actor()
        )

    _print_user(_run(add, create=True), as_json)


@users_app.command("list")
def users_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Users per page.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="Start after this id (the previous page's next_after).")
    ] = None,
    include_disabled: Annotated[
        bool,
        typer.Option("--include-disabled/--no-include-disabled", help="Show disabled users."),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """List users, ordered by id, one page at a time."""

    async def page(state: Runtime) -> UserPage:
        return await state.service.list_users(
            limit=limit, after=after, include_disabled=include_disabled
        )

    result = _run(page)
    if as_json:
        users = [_scripted(UserOut.of(record)) for record in result.users]
        _emit({"users": users, "next_after": result.next_after}, as_json=True)
        return
    if not result.users:
        typer.echo("no users")
        return
    headers = ("id", "email", "roles", "scopes", "created", "last login", "failed", "disabled")
    rows = [
        (
            r.id,
            r.email,
            ",".join(r.roles) or "-",
            _scopes_text(r.scopes),
            _short(r.created_at),
            _short(r.last_login_at),
            str(r.failed_logins),
            _short(r.disabled_at),
        )
        for r in result.users
    ]
    _table(headers, rows)
    if result.next_after is not None:
        typer.echo(f"more: keyturn users list --after {result.next_after}")


@users_app.command("disable")
def users_disable(
    user: UserArgument,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Disable a user: no more logins or refreshes, and their tokens are revoked."""

    async def disable(state: Runtime) -> UserRecord:
        found = await _resolve_user(state.service, user)
        return await state.service.disable_user(found.id, reason=reason, actor=_actor())

    _print_user(_run(disable), as_json)


@users_app.command("enable")
def users_enable(user: UserArgument, as_json: JsonOption = False) -> None:
    """Let a disabled user log in again."""

    async def enable(state: Runtime) -> UserRecord:
        found = await _resolve_user(state.service, user)
        return await state.service.enable_user(found.id, actor=_actor())

    _print_user(_run(enable), as_json)


@users_app.command("set-password")
def users_set_password(
    user: UserArgument, password_stdin: PasswordStdinOption = False, as_json: JsonOption = False
) -> None:
    """Set a user's password (prompted, or --password-stdin); their sessions end."""
    password = _read_password(password_stdin)

    async def set_password(state: Runtime) -> UserRecord:
        found = await _resolve_user(state.service, user)
        return await state.service.set_user_password(found.id, password, actor=_actor())

    _print_user(_run(set_password), as_json)
