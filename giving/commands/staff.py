"""`giving users ...` and `giving tokens ...`: staff users and their API tokens."""

from __future__ import annotations

import datetime as dt
import sys

import typer

from core import auth


def register(app: typer.Typer) -> None:
    users = typer.Typer(no_args_is_help=True, help="Staff users.")
    tokens = typer.Typer(no_args_is_help=True, help="API tokens for the staff JSON API.")
    app.add_typer(users, name="users")
    app.add_typer(tokens, name="tokens")

    @users.command("add")
    def users_add(
        email: str = typer.Argument(..., help="The staff member's email (their login)."),
        role: str = typer.Option(..., "--role", help="admin, finance or fundraiser."),
    ) -> None:
        """Create a staff user; the password is read from stdin. Finance and admin get a TOTP secret: its
        otpauth:// URI is printed on stdout, to scan into an authenticator app."""
        from giving.cli import command_runtime, fail

        password = _read_password()
        if not password:
            fail("no password on stdin (e.g. `printf '%s' \"$PASSWORD\" | giving users add ...`)")
        with command_runtime(with_tasks=False) as runtime:
            with runtime.unit_of_work() as uow:
                created = auth.add_staff_user(uow, email, role, password, issuer=runtime.settings.charity.name)
            typer.echo(f"created {created.role.value} {created.email}", err=True)
            if created.otpauth_uri:
                typer.echo(created.otpauth_uri)

    @users.command("deactivate")
    def users_deactivate(email: str = typer.Argument(...)) -> None:
        """Stop a staff user logging in: their sessions and API tokens end (the user is kept for the audit log)."""
        from giving.cli import command_runtime, fail

        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            user = auth.user_by_email(uow.session, email)
            if user is None:
                fail(f"no staff user {email}")
                return
            auth.deactivate_staff_user(uow, user)
            auth.audit(uow, None, "staff_user_deactivated", "staff_user", user.id)
        typer.echo(f"deactivated {email}", err=True)

    @users.command("reset-password")
    def users_reset_password(email: str = typer.Argument(...)) -> None:
        """Email the user a password-reset link (valid for an hour)."""
        from giving.cli import command_runtime, fail

        with command_runtime() as runtime:
            with runtime.unit_of_work() as uow:
                sent = auth.request_password_reset(uow, email)
            if not sent:
                fail(f"no active staff user {email}")
            typer.echo(f"a reset link is on its way to {email}", err=True)

    @users.command("reset-2fa")
    def users_reset_2fa(email: str = typer.Argument(...)) -> None:
        """For a user who lost their authenticator: clear their TOTP secret and end their sessions. Finance and
        admin get a new secret: its otpauth:// URI is printed on stdout, to scan into an authenticator app."""
        from giving.cli import command_runtime, fail

        with command_runtime(with_tasks=False) as runtime:
            with runtime.unit_of_work() as uow:
                user = auth.user_by_email(uow.session, email)
                if user is None:
                    fail(f"no staff user {email}")
                    return
                uri = auth.reset_totp(uow, user, issuer=runtime.settings.charity.name)
                address = user.email
            typer.echo(f"reset two-factor login of {address}; their sessions have ended", err=True)
            if uri:
                typer.echo(uri)

    @tokens.command("create")
    def tokens_create(
        email: str = typer.Argument(..., help="The staff user the token acts as."),
        days: int = typer.Option(365, "--days", min=1, max=3650, help="Days until the token expires."),
        name: str = typer.Option("", "--name", help="What the token is for."),
    ) -> None:
        """Print a new API token (shown once; only its hash is kept)."""
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime:
            with runtime.unit_of_work() as uow:
                token = auth.create_api_token(uow, email, name=name, lifetime=dt.timedelta(days=days))
            typer.echo(token)

    @tokens.command("revoke")
    def tokens_revoke(
        email: str = typer.Argument(None, help="Revoke every token of this user."),
        token: str = typer.Option("", "--token", help="Revoke just this token (read from stdin with '-')."),
    ) -> None:
        """Revoke a user's tokens, or one token."""
        from giving.cli import command_runtime, fail

        if token == "-":
            token = sys.stdin.readline().strip()
        if not token and not email:
            fail("name a user, or give --token")
        with command_runtime(with_tasks=False) as runtime:
            with runtime.unit_of_work() as uow:
                if token:
                    if not auth.revoke_api_token(uow, token):
                        fail("no live token like that")
                    count = 1
                else:
                    count = auth.revoke_user_tokens(uow, email)
            typer.echo(f"revoked {count} token(s)", err=True)


def _read_password() -> str:
    if sys.stdin is None:
        return ""
    # One line; a trailing newline (from echo) is not part of the password.
    return sys.stdin.readline().rstrip("\r\n")
