"""The schema comes only from migrations, and the migrations describe exactly the models."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.migrate import alembic_config, head_revisions
from cbi_service.schema import Base
from ledger import AccountKind, Ledger
from tests.ledger.support import transfer

ROOT = Path(__file__).resolve().parents[1]


def test_one_head():
    assert len(head_revisions()) == 1


async def _differences(engine: AsyncEngine) -> list[object]:
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        return await conn.run_sync(diff)


async def test_models_match_the_migrated_schema(engine):
    assert await _differences(engine) == []


async def test_every_migration_downgrades_and_upgrades_again(engine, database_url):
    config = alembic_config(database_url)
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _differences(engine) == []
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        source = (await ledger.create_account("source", "COP", AccountKind.EQUITY)).id
        target = (await ledger.create_account("target", "COP", AccountKind.ASSET)).id
        await ledger.post(transfer("after-round-trip", source, target, 5))
        await ledger.post_many([transfer(f"bulk-{i}", target, source, 1) for i in range(3)])
        assert await ledger.verify_balances() == []


def test_the_plain_alembic_command_reads_database_url_from_the_environment(database_url):
    """`alembic current` as an operator types it (alembic.ini, DATABASE_URL in the environment): the URL is a
    secret type in the settings, and the environment must read its value, not its masked form."""
    env = os.environ | {"DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert next(iter(head_revisions())) in done.stdout
