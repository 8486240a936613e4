"""Async engine and the unit of work: one session per request or job, committed or rolled back in one place."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cbi_service.kit.settings import Settings

T = TypeVar("T")
_CONNECT_ARGS = {"server_settings": {"application_name": "cbi-service", "timezone": "UTC"}}


def make_engine(url: str, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args=_CONNECT_ARGS,
    )


def make_lookup_engine(url: str, settings: Settings) -> AsyncEngine:
    """An engine for the single reads a request makes before its work is carried out in another transaction
    (who is calling, ahead of a group commit), read through `lookup`: its connections run each statement on
    its own (autocommit), so a read costs its one round trip, with no BEGIN or COMMIT and no ping first (a
    connection found dead is replaced and the read made again). A small pool of its own: these reads are
    short, and none waits on a connection the requests' transactions hold."""
    return create_async_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=max(2, settings.db_pool_size // 4),
        max_overflow=0,
        hide_parameters=True,
        connect_args=_CONNECT_ARGS,
    )


async def lookup(sessions: async_sessionmaker[AsyncSession], read: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`read` in a session of the lookup engine, given back at once. Its pooled connections are not pinged
    before use: one that the server closed since (a restart) fails, which invalidates the pool's others too,
    and the read is made once more on a new connection. Only reads: a statement that failed wrote nothing."""
    try:
        async with sessions() as session:
            return await read(session)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    async with sessions() as session:
        return await read(session)


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextlib.asynccontextmanager
async def standalone_sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on an engine of their own, disposed on exit: for commands that run outside the app."""
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: services only flush; this commits on success and rolls back on error."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    async with factory() as session:
        request.state.unit_of_work = session
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def release_connection(session: AsyncSession) -> None:
    """End the request's transaction, which has only read (who is calling, what it is about), so that its
    connection goes back to the pool before the request waits on a partner's system: a pool's worth of
    waiting requests holding theirs would leave the rest of the process none. Whatever the transaction
    locked is released with it."""
    await session.commit()


async def roll_back_request(request: Request) -> None:
    """Undo what the request's unit of work wrote so far: for a route that answers an error itself (an
    error page) instead of raising it, which would leave `get_session` nothing to roll back on."""
    session: AsyncSession | None = getattr(request.state, "unit_of_work", None)
    if session is not None:
        await session.rollback()


@contextlib.asynccontextmanager
async def read_snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of its own inside a REPEATABLE READ, read-only transaction: one consistent picture
    for a streamed body, which outlives the request's session, while writes go on.

    A stream that stops early (the client went away) may leave the connection in the middle of a COPY or
    a fetch, so it is dropped rather than given back to the pool.
    """
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        async with conn.begin():
            try:
                yield conn
            except BaseException:
                await conn.invalidate()
                raise
