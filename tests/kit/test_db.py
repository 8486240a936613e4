"""The engines' connections: the lookup engine's run each statement in a transaction of its own, and a
lookup outlives a connection the server closed."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from cbi_service.kit.db import lookup, make_engine, make_lookup_engine, make_session_factory

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


async def test_a_lookup_on_a_connection_the_server_closed_is_made_again_on_a_new_one(settings, engine):
    """Lookup connections are not pinged before use: one closed by the server since (a restart) fails, and
    the read is made once more, on a new connection; any other failure is the caller's."""
    lookups = make_lookup_engine(settings.async_database_url, settings)
    sessions = make_session_factory(lookups)
    calls = 0

    async def backend_pid(session) -> int:
        nonlocal calls
        calls += 1
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())

    try:
        first = await lookup(sessions, backend_pid)
        async with engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first})
        calls = 0
        again = await lookup(sessions, backend_pid)
        assert again != first
        assert calls == 2

        async def broken(session) -> None:
            nonlocal calls
            calls += 1
            await session.execute(text("SELECT no_such_column FROM pg_class"))

        calls = 0
        with pytest.raises(ProgrammingError):
            await lookup(sessions, broken)
        assert calls == 1
    finally:
        await lookups.dispose()
