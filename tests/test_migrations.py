"""The schema comes only from migrations, and the migrations describe exactly the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cbi_service.migrate import head_revisions
from cbi_service.schema import Base


def test_one_head():
    assert len(head_revisions()) == 1


async def test_models_match_the_migrated_schema(engine):
    def diff(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
