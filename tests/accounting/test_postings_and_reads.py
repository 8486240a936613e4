"""Programme postings under concurrency, the chart of accounts as a precondition, and malformed read
parameters answered as 422."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cbi_service.accounting import service
from cbi_service.kit.pagination import encode_cursor
from cbi_service.programmes.models import Programme
from ledger import CurrencyMismatch, Ledger
from tests.support import assert_problem, make_programme

Headers = dict[str, str]


async def _funded_programme(client: httpx.AsyncClient, api_key_factory: Any, amount: str = "1000.00") -> str:
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    funded = await client.post(
        f"/v1/programmes/{programme_id}/funds",
        json={"amount": {"amount": amount, "currency": "COP"}, "source": "ECHO", "reference": "G"},
        headers=finance | {"Idempotency-Key": f"fund-{programme_id}"},
    )
    assert funded.status_code == 201, funded.text
    return programme_id


async def _issued(session_factory: async_sessionmaker[AsyncSession], programme_id: str, amount: int) -> uuid.UUID:
    """An entitlement's money reserved and disbursed; returns the entitlement id."""
    entitlement = uuid.uuid4()
    async with session_factory.begin() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        await service.reserve(session, programme, entitlement, amount, event="approved")
        await service.disburse(session, programme, entitlement, amount)
    return entitlement


async def _redeem(
    session_factory: async_sessionmaker[AsyncSession], programme_id: str, entitlement: uuid.UUID, event: str
) -> None:
    async with session_factory.begin() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        await service.redeem(session, programme, entitlement, 1_000, event=event)


async def _figures(session_factory: async_sessionmaker[AsyncSession], programme_id: str) -> service.ProgrammeBalances:
    async with session_factory() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        return await service.programme_balances(session, programme)


async def test_two_redemptions_of_one_voucher_at_once_both_post(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    programme_id = await _funded_programme(client, api_key_factory)
    entitlement = await _issued(session_factory, programme_id, 5_000)
    # Two different purchases of 10.00 each, in two units of work at the same moment.
    await asyncio.gather(
        _redeem(session_factory, programme_id, entitlement, "purchase-1"),
        _redeem(session_factory, programme_id, entitlement, "purchase-2"),
    )
    figures = await _figures(session_factory, programme_id)
    assert (figures.redeemed, figures.disbursed) == (2_000, 5_000)


async def test_one_event_posts_once_and_a_second_posting_of_it_is_an_error(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    programme_id = await _funded_programme(client, api_key_factory)
    entitlement = await _issued(session_factory, programme_id, 5_000)
    await _redeem(session_factory, programme_id, entitlement, "purchase-1")
    with pytest.raises(service.LedgerOutOfStep):
        await _redeem(session_factory, programme_id, entitlement, "purchase-1")
    # The same event in two units of work at once: one posts, the other is told the ledger has it.
    outcomes = await asyncio.gather(
        *(_redeem(session_factory, programme_id, entitlement, "purchase-2") for _ in range(2)),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["LedgerOutOfStep", "NoneType"]
    assert (await _figures(session_factory, programme_id)).redeemed == 2_000


async def test_a_unit_of_work_of_many_postings_holds_one_chain_stripe(
    client: httpx.AsyncClient,
    api_key_factory: Any,
    session_factory: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    programme_id = await _funded_programme(client, api_key_factory)
    async with session_factory.begin() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        batches = [uuid.uuid4() for _ in range(40)]
        chains = {(await service.reserve(session, programme, b, 100, event="approved")).chain for b in batches}
        assert len(chains) == 1
        # Meanwhile every other stripe is free for other writers.
        async with engine.connect() as other:
            free = await other.execute(
                text("SELECT count(*) FROM (SELECT chain FROM ledger.chains FOR UPDATE SKIP LOCKED) x")
            )
            assert free.scalar_one() == 63
            await other.rollback()
    assert (await _figures(session_factory, programme_id)).committed == 4_000


async def _bare_programme(session_factory: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    """A programme row written without going through `create_programme`, so without its chart."""
    async with session_factory.begin() as session:
        programme = Programme(
            name="Sin plan de cuentas",
            country="CO",
            currency="COP",
            sector="multipurpose_cash",
            delivery_mechanism="prepaid_card",
            provider="cards",
            approvals_required=1,
            created_by=uuid.uuid4(),
        )
        session.add(programme)
        await session.flush()
        return programme.id


async def _ledger_accounts(engine: AsyncEngine, programme_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM ledger.accounts WHERE code LIKE :prefix"), {"prefix": f"prog:{programme_id}:%"}
        )
        return int(found.scalar_one())


async def test_reading_balances_never_creates_accounts(
    client: httpx.AsyncClient,
    api_key_factory: Any,
    session_factory: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
) -> None:
    auditor = await api_key_factory("auditor")
    programme_id = await _bare_programme(session_factory)
    response = await client.get(f"/v1/programmes/{programme_id}/balances", headers=auditor)
    assert_problem(response, 500)
    assert await _ledger_accounts(engine, programme_id) == 0


async def test_accounts_of_a_rolled_back_unit_of_work_are_not_remembered(
    session_factory: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    programme_id = await _bare_programme(session_factory)
    async with session_factory() as session:
        programme = await session.get(Programme, programme_id)
        assert programme is not None
        await service.open_programme_accounts(session, programme)
        assert (await service.programme_accounts(session, programme)).available is not None
        await session.rollback()
    assert await _ledger_accounts(engine, programme_id) == 0
    async with session_factory() as session:
        programme = await session.get(Programme, programme_id)
        assert programme is not None
        with pytest.raises(service.MissingChart):
            await service.programme_accounts(session, programme)


async def test_a_chart_in_two_currencies_is_a_fault_not_an_amount_error(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    programme_id = await _bare_programme(session_factory)
    async with session_factory.begin() as session:
        programme = await session.get(Programme, programme_id)
        assert programme is not None
        ledger = Ledger(await session.connection())
        for name, (kind, flags) in service.CHART.items():
            currency = "USD" if name == "committed" else "COP"
            await ledger.create_account(service.account_code(programme_id, name), currency, kind, flags=flags)
        await service.fund(session, programme, 10_000, source="ECHO", reference="G", request_key="r")
        with pytest.raises(CurrencyMismatch):
            await service.reserve(session, programme, uuid.uuid4(), 1_000, event="approved")


@pytest.mark.parametrize(
    "cursor",
    [
        "2026-01-01T00:00:00+00:00~9223372036854775808",
        "2026-01-01T00:00:00+00:00~-1",
        "0001-01-01T00:00:00+14:00~1",
        "9999-12-31T23:00:00-14:00~1",
        "2026-01-01T00:00:00~1",
    ],
)
async def test_a_malformed_entries_cursor_is_422(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession], cursor: str
) -> None:
    programme_id = await _funded_programme(client, api_key_factory)
    auditor = await api_key_factory("auditor")
    async with session_factory() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        available = (await service.programme_accounts(session, programme)).available
    response = await client.get(
        f"/v1/ledger/accounts/{available}/entries", params={"cursor": encode_cursor([cursor])}, headers=auditor
    )
    assert_problem(response, 422)


@pytest.mark.parametrize(
    "as_of",
    ["0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-14:00", "1899-12-31T23:59:59Z"],
)
async def test_a_trial_balance_time_out_of_range_is_422(
    client: httpx.AsyncClient, api_key_factory: Any, as_of: str
) -> None:
    auditor = await api_key_factory("auditor")
    response = await client.get("/v1/ledger/trial-balance", params={"as_of": as_of}, headers=auditor)
    assert_problem(response, 422)
