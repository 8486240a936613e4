"""`GroupCommit`: what arrives together is committed together, each item with its own outcome; a group that
fails fails as a whole, writes nothing, and the next group goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.kit.group_commit import GroupCommit


async def _table(session_factory) -> None:
    async with session_factory() as session, session.begin():
        await session.execute(text("CREATE TABLE grouped (item text PRIMARY KEY, grp int NOT NULL)"))


async def test_concurrent_items_share_a_transaction_and_a_failed_group_writes_nothing(session_factory):
    await _table(session_factory)
    groups: list[list[str]] = []

    async def process(session: AsyncSession, items: Sequence[str]) -> list[str]:
        groups.append(list(items))
        for item in items:
            await session.execute(text("INSERT INTO grouped VALUES (:item, :grp)"), {"item": item, "grp": len(groups)})
        if "boom" in items:
            await session.execute(text("SELECT 1 / 0"))
        return [item.upper() for item in items]

    writer = GroupCommit(session_factory, process)
    assert await asyncio.gather(*(writer.submit(i) for i in ("a", "b", "c"))) == ["A", "B", "C"]
    failed = await asyncio.gather(*(writer.submit(i) for i in ("d", "boom", "e")), return_exceptions=True)
    assert all(isinstance(outcome, DBAPIError) for outcome in failed)
    assert await writer.submit("f") == "F"
    await writer.aclose()
    with pytest.raises(RuntimeError):
        await writer.submit("g")

    assert groups == [["a", "b", "c"], ["d", "boom", "e"], ["f"]]
    async with session_factory() as session:
        rows = (await session.execute(text("SELECT item, grp FROM grouped ORDER BY item"))).all()
    assert [tuple(row) for row in rows] == [("a", 1), ("b", 1), ("c", 1), ("f", 3)]


async def test_a_group_that_answers_for_fewer_items_commits_nothing(session_factory):
    await _table(session_factory)

    async def process(session: AsyncSession, items: Sequence[str]) -> list[str]:
        await session.execute(text("INSERT INTO grouped VALUES ('x', 1)"))
        return list(items)[:-1]

    writer = GroupCommit(session_factory, process)
    failed = await asyncio.gather(writer.submit("a"), writer.submit("b"), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in failed)
    async with session_factory() as session:
        assert (await session.execute(text("SELECT count(*) FROM grouped"))).scalar_one() == 0


async def test_with_two_writers_a_group_goes_on_while_another_waits(session_factory):
    second_started = asyncio.Event()

    async def process(session: AsyncSession, items: Sequence[str]) -> list[str]:
        if "first" in items:
            await asyncio.wait_for(second_started.wait(), timeout=10)
        else:
            second_started.set()
        await session.execute(text("SELECT 1"))
        return list(items)

    writer = GroupCommit(session_factory, process, writers=2)
    first = asyncio.create_task(writer.submit("first"))
    await asyncio.sleep(0.05)
    assert await writer.submit("second") == "second"
    assert await first == "first"
    await writer.aclose()
