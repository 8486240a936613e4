"""What the commands defined in the domains share: the database the root opens, the operator's key, and
the service's errors turned into a message and an exit status."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Protocol

import typer

from cbi_service.kit.settings import Settings


class Runtime(Protocol):
    """The root command's `ctx.obj`: it alone may start or join the embedded database."""

    def database(self, **options: Any) -> contextlib.AbstractContextManager[Settings]: ...


def database(ctx: typer.Context, **options: Any) -> contextlib.AbstractContextManager[Settings]:
    """Settings bound to the database (DATABASE_URL, or the embedded server), as the root opens it."""
    runtime: Runtime = ctx.find_root().obj
    return runtime.database(**options)


ApiKeyOption = Annotated[
    str,
    typer.Option(
        "--api-key",
        envvar="CBI_API_KEY",
        show_default=False,
        help="Your own API key (or CBI_API_KEY, kept out of shell history): the audit trail names its holder.",
    ),
]


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """A refusal of the service (no such job, a key without the role) ends the command with its message and
    exit status 1, as the API would answer it with a problem."""
    from cbi_service.kit.errors import AppError  # with FastAPI behind it: not for every command's start

    try:
        yield
    except AppError as exc:
        typer.echo(f"cbi-service: {exc.detail}", err=True)
        for error in exc.extra.get("errors", []):
            typer.echo(f"  {error.get('field')}: {error.get('message')}", err=True)
        raise typer.Exit(1) from None
