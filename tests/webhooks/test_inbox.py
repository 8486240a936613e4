"""The inbox writer: concurrent requests share commits, a webhook-id is stored once, a bad row fails alone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from cbi_service.webhooks.inbox import InboxWriter
from cbi_service.webhooks.repository import InboxRow
from tests.webhooks.support import card_issued, count_events, deliver, stored_events


async def test_concurrent_redeliveries_of_one_webhook_id_store_it_once(client, session_factory):
    body = card_issued(uuid.uuid4())
    answers = await asyncio.gather(*(deliver(client, "cards", body, webhook_id="msg_storm") for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 19 + [202]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await count_events(session_factory) == 1


async def test_concurrent_distinct_events_are_all_stored(client, session_factory):
    answers = await asyncio.gather(*(deliver(client, "cards", card_issued(uuid.uuid4())) for _ in range(50)))
    assert {a.status_code for a in answers} == {202}
    assert await count_events(session_factory) == 50


def _row(webhook_id: str, *, event_type: str = "entitlement.issued") -> InboxRow:
    now = datetime.now(UTC)
    return InboxRow(
        id=uuid.uuid4(),
        provider="cards",
        webhook_id=webhook_id,
        event_type=event_type,
        entitlement_id=uuid.uuid4(),
        provider_ref="ref",
        occurred_at=now,
        signed_at=now,
        body="{}",
        event='{"type": "entitlement.issued"}',
    )


async def test_a_row_that_cannot_be_stored_fails_alone(engine, session_factory):
    writer = InboxWriter(engine)
    writer.start()
    try:
        good = [_row(f"msg_ok_{n}") for n in range(5)]
        bad = _row("msg_bad", event_type="x" * 41)
        results = await asyncio.gather(
            *(writer.store(row) for row in [*good[:2], bad, *good[2:]]), return_exceptions=True
        )
    finally:
        await writer.stop()
    assert isinstance(results[2], Exception)
    assert [r.duplicate for r in results if not isinstance(r, BaseException)] == [False] * 5
    assert sorted(e.webhook_id for e in await stored_events(session_factory)) == sorted(r.webhook_id for r in good)


async def test_a_stopped_writer_refuses_new_events(engine):
    writer = InboxWriter(engine)
    writer.start()
    await writer.stop()
    with pytest.raises(RuntimeError, match="not accepting"):
        await writer.store(_row("msg_late"))


async def test_a_connection_lost_while_idle_is_replaced(engine, session_factory, database_url):
    writer = InboxWriter(engine, lanes=1)
    writer.start()
    try:
        await writer.store(_row("msg_before"))
        admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed >= 1
        stored = await writer.store(_row("msg_after"))
    finally:
        await writer.stop()
        await engine.dispose()
    assert stored.duplicate is False
    assert sorted(e.webhook_id for e in await stored_events(session_factory)) == ["msg_after", "msg_before"]
