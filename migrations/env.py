"""Async Alembic environment: migrations run over asyncpg, the URL comes from the caller or settings."""

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cbi_service.kit.settings import get_settings, to_asyncpg_url
from cbi_service.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    configured = get_settings().database_url
    url = config.get_main_option("sqlalchemy.url") or (configured.get_secret_value() if configured else None)
    if not url:
        raise RuntimeError("no database URL: set DATABASE_URL or pass one to the migration")
    return to_asyncpg_url(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_async())
