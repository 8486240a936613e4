"""`cbi-service keys generate|rotate|status`: the master key to configure, and key rotation (§13)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cbi_service.kit.commands import ApiKeyOption, database, service_errors
from cbi_service.kit.settings import Settings

keys_app = typer.Typer(help="Keys that protect personal data: generate, rotate, status.", no_args_is_help=True)


@keys_app.command("generate")
def generate_command() -> None:
    """Print a new master key (the base64 of 32 random bytes) for CBI_MASTER_KEY or a key file."""
    from cbi_service.kit.crypto import new_master_key

    typer.echo(new_master_key())


@keys_app.command("rotate")
def rotate_command(
    ctx: typer.Context,
    api_key: ApiKeyOption,
    wait: Annotated[bool, typer.Option(help="Follow the rotation until it completes.")] = True,
) -> None:
    """Make a new key version the one new data is sealed under, and have the workers (`serve`, `worker`)
    seal every record again under it in the background while the service serves; the old versions are
    deleted once nothing uses them. Prints the progress until then (--no-wait: only start it)."""

    async def start(settings: Settings) -> str:
        from cbi_service.auth.roles import Role
        from cbi_service.auth.service import authorize
        from cbi_service.jobs.worker import load_handlers
        from cbi_service.keys.service import start_rotation
        from cbi_service.kit.db import standalone_sessions

        load_handlers()
        async with standalone_sessions(settings) as sessions, sessions.begin() as session:
            principal = await authorize(session, api_key, [Role.admin])
            rotation = await start_rotation(session, principal)
            typer.echo(
                f"rotation {rotation.id}: key version {rotation.to_version}, {rotation.total} rows to seal again"
            )
            return str(rotation.id)

    with service_errors(), database(ctx) as settings:
        rotation_id = asyncio.run(start(settings))
        if wait:
            asyncio.run(_follow(settings, rotation_id))


async def _follow(settings: Settings, rotation_id: str) -> None:
    import uuid

    from cbi_service.keys.repository import RotationRepository
    from cbi_service.kit.db import standalone_sessions

    async with standalone_sessions(settings) as sessions:
        while True:
            async with sessions() as session:
                rotation = await RotationRepository(session).require(uuid.UUID(rotation_id))
            typer.echo(f"{rotation.status}: {rotation.done}/{rotation.total}")
            if rotation.status == "completed":
                return
            await asyncio.sleep(2)


@keys_app.command("status")
def status_command(ctx: typer.Context) -> None:
    """The stored key versions (never a key) and the last rotation's progress."""

    async def run(settings: Settings) -> None:
        from cbi_service.keys.repository import RotationRepository
        from cbi_service.kit.crypto import versions_in_use
        from cbi_service.kit.db import standalone_sessions

        async with standalone_sessions(settings) as sessions, sessions() as session:
            for version, purpose, status in await versions_in_use(session):
                typer.echo(f"version {version}  {purpose:8} {status}")
            rotation = await RotationRepository(session).latest()
            if rotation is not None:
                typer.echo(f"last rotation {rotation.id}: {rotation.status}, {rotation.done}/{rotation.total}")

    with database(ctx) as settings:
        asyncio.run(run(settings))
