"""The engines' connections: the lookup engine's run each statement in a transaction of its own."""

from __future__ import annotations

from sqlalchemy import text

from cbi_service.kit.db import make_engine, make_lookup_engine, make_session_factory

_XID = text("SELECT pg_current_xact_id()::text")


async def _two_transaction_ids(engine) -> set[str]:
    try:
        async with make_session_factory(engine)() as session:
            return {(await session.execute(_XID)).scalar_one() for _ in range(2)}
    finally:
        await engine.dispose()


async def test_a_lookup_session_opens_no_transaction_and_a_unit_of_work_one(settings):
    url = settings.async_database_url
    # Autocommit: two statements of one lookup session are two transactions, with no BEGIN or COMMIT sent.
    assert len(await _two_transaction_ids(make_lookup_engine(url, settings))) == 2
    assert len(await _two_transaction_ids(make_engine(url, settings))) == 1
