"""Programme funding and balances over HTTP, and the programme money postings the disbursement code uses."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.accounting import service
from cbi_service.kit.errors import Conflict
from cbi_service.programmes.models import Programme
from ledger import Ledger, schema
from tests.ledger.support import counter_mismatches, unbalanced_transactions
from tests.support import assert_problem, make_programme

Headers = dict[str, str]


def _fund_body(amount: str, currency: str = "COP", reference: str = "GRANT-1") -> dict[str, Any]:
    return {"amount": {"amount": amount, "currency": currency}, "source": "ECHO", "reference": reference}


async def _fund(
    client: httpx.AsyncClient, programme_id: str, finance: Headers, key: str, amount: str, reference: str = "GRANT-1"
) -> httpx.Response:
    return await client.post(
        f"/v1/programmes/{programme_id}/funds",
        json=_fund_body(amount, reference=reference),
        headers=finance | {"Idempotency-Key": key},
    )


async def _programme_row(session: AsyncSession, programme_id: str) -> Programme:
    programme = await session.get(Programme, uuid.UUID(programme_id))
    assert programme is not None
    return programme


async def _balances(client: httpx.AsyncClient, programme_id: str, headers: Headers) -> dict[str, str]:
    response = await client.get(f"/v1/programmes/{programme_id}/balances", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return {
        name: body[name]["amount"] for name in ("funded", "available", "committed", "disbursed", "redeemed", "returned")
    }


def _identity_holds(balances: dict[str, str]) -> bool:
    minor = {k: Decimal(v) for k, v in balances.items()}
    return minor["funded"] == minor["available"] + minor["committed"] + minor["disbursed"]


async def test_programme_gets_its_chart_and_funding_moves_balances(
    client: httpx.AsyncClient, api_key_factory: Any
) -> None:
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    accounts = (await client.get("/v1/ledger/accounts", params={"programme_id": programme_id}, headers=admin)).json()
    assert sorted(a["code"].rsplit(":", 1)[1] for a in accounts["items"]) == [
        "available",
        "committed",
        "disbursed",
        "donor_funds",
        "redeemed",
    ]
    assert all(a["currency"] == "COP" for a in accounts["items"])

    funded = await _fund(client, programme_id, finance, "fund-1", "150000.00")
    assert funded.status_code == 201, funded.text
    body = funded.json()
    assert body["amount"] == {"amount": "150000.00", "currency": "COP"}
    assert body["balances"]["funded"] == {"amount": "150000.00", "currency": "COP"}
    assert await _balances(client, programme_id, admin) == {
        "funded": "150000.00",
        "available": "150000.00",
        "committed": "0.00",
        "disbursed": "0.00",
        "redeemed": "0.00",
        "returned": "0.00",
    }
    # The same request replays; the same key with another body is refused; nothing is posted twice.
    replay = await _fund(client, programme_id, finance, "fund-1", "150000.00")
    assert replay.status_code == 201
    assert replay.json() == body
    assert_problem(
        await _fund(client, programme_id, finance, "fund-1", "1.00"),
        422,
    )
    assert (await _balances(client, programme_id, admin))["funded"] == "150000.00"

    audit = (await client.get("/v1/audit-events", params={"resource_id": programme_id}, headers=admin)).json()
    funded_events = [e for e in audit["items"] if e["action"] == "programme.funded"]
    assert len(funded_events) == 1
    assert funded_events[0]["after"]["amount_minor"] == 15_000_000


async def test_funding_validation(client: httpx.AsyncClient, api_key_factory: Any) -> None:
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    url = f"/v1/programmes/{programme_id}/funds"

    async def post(body: dict[str, Any], key: str | None = "k") -> httpx.Response:
        headers = finance | ({"Idempotency-Key": key} if key else {})
        return await client.post(url, json=body, headers=headers)

    assert_problem(await post(_fund_body("10.00"), key=None), 422)
    assert_problem(await post(_fund_body("10.00", currency="USD"), key="usd"), 422)
    assert_problem(await post(_fund_body("10.5"), key="digits"), 422)
    assert_problem(await post(_fund_body("0.00"), key="zero"), 422)
    assert_problem(await post(_fund_body("-5.00"), key="negative"), 422)
    assert_problem(await post(_fund_body("99999999999999999999.00"), key="huge"), 422)
    missing = f"/v1/programmes/{uuid.uuid4()}/funds"
    assert_problem(await client.post(missing, json=_fund_body("1.00"), headers=finance | {"Idempotency-Key": "x"}), 404)
    assert_problem(await client.get(f"/v1/programmes/{uuid.uuid4()}/balances", headers=admin), 404)
    assert (await _balances(client, programme_id, admin))["funded"] == "0.00"


async def test_a_refused_funding_is_replayed_and_posts_nothing(client: httpx.AsyncClient, api_key_factory: Any) -> None:
    """The key answers its first 422 again, and a corrected body under it is a reused key: nothing posted."""
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    url = f"/v1/programmes/{programme_id}/funds"
    keyed = finance | {"Idempotency-Key": "grant-usd"}
    refused = await client.post(url, json=_fund_body("10.00", currency="USD"), headers=keyed)
    assert_problem(refused, 422)
    replay = await client.post(url, json=_fund_body("10.00", currency="USD"), headers=keyed)
    assert (replay.status_code, replay.content, replay.headers.get("Idempotent-Replayed")) == (
        422,
        refused.content,
        "true",
    )
    assert replay.headers["content-type"].startswith("application/problem+json")
    corrected = await client.post(url, json=_fund_body("10.00"), headers=keyed)
    assert assert_problem(corrected, 422)["errors"][0]["field"] == "Idempotency-Key"
    assert (await _balances(client, programme_id, admin))["funded"] == "0.00"


async def test_identity_holds_under_concurrent_funding_and_spending(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])

    async def fund(n: int) -> int:
        response = await _fund(client, programme_id, finance, f"concurrent-{n}", "1000.00", reference=f"G-{n}")
        return response.status_code

    async def reserve_and_issue(n: int) -> bool:
        """Reserve 500.00, issue 300.00 and give 200.00 back; False when the reservation is refused."""
        async with session_factory.begin() as session:
            programme = await _programme_row(session, programme_id)
            subject = uuid.uuid4()
            try:
                await service.reserve(session, programme, subject, 50_000, event="approved")
            except Conflict:
                return False
            await service.disburse(session, programme, subject, 30_000)
            await service.release_reservation(session, programme, subject, 20_000, event="cancelled")
            return True

    # One grant lands first, so at least one reservation finds money whatever the interleaving.
    assert (await fund(0)) == 201
    results = await asyncio.gather(*(fund(n) for n in range(1, 12)), *(reserve_and_issue(n) for n in range(12)))
    assert results[:11] == [201] * 11
    issued = sum(1 for spent in results[11:] if spent)
    assert issued >= 1
    balances = await _balances(client, programme_id, admin)
    assert balances["funded"] == "12000.00"
    assert balances["committed"] == "0.00"
    assert Decimal(balances["disbursed"]) == Decimal("300.00") * issued
    assert Decimal(balances["available"]) == Decimal("12000.00") - Decimal("300.00") * issued
    assert _identity_holds(balances)
    async with session_factory() as session:
        conn = await session.connection()
        assert await unbalanced_transactions(conn) == []
        assert await counter_mismatches(conn) == []
        assert (await Ledger(conn).verify_chain()).ok


async def test_programme_money_lifecycle(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    await _fund(client, programme_id, finance, "fund", "1000.00")
    batch, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with session_factory.begin() as session:
        programme = await _programme_row(session, programme_id)
        reserve = await service.reserve(session, programme, batch, 60_000, event="approved")
        assert reserve.kind == service.RESERVATION
        with pytest.raises(Conflict):
            await service.reserve(session, programme, uuid.uuid4(), 50_000, event="approved")
        issued = await service.disburse_many(session, [(programme, first, 20_000), (programme, second, 25_000)])
        assert [t.references["entitlement_id"] for t in issued] == [str(first), str(second)]
        await service.release_reservation(session, programme, batch, 15_000, event="cancelled")
        await service.redeem(session, programme, first, 5_000, event="after-0")
        await service.redeem(session, programme, first, 7_000, event="after-5000")
        await service.return_to_budget(session, programme, first, 8_000, "expired")
        await service.return_to_budget(session, programme, second, 25_000, "cancelled")
        with pytest.raises(Conflict):
            await service.redeem(session, programme, second, 1, event="after-0")
        assert (await service.programme_balances(session, programme)).returned == 33_000
    balances = await _balances(client, programme_id, admin)
    assert balances == {
        "funded": "1000.00",
        "available": "880.00",
        "committed": "0.00",
        "disbursed": "120.00",
        "redeemed": "120.00",
        "returned": "330.00",
    }
    assert _identity_holds(balances)
    async with session_factory() as session:
        keys = (await session.execute(select(schema.transactions.c.key))).scalars()
        redemption_keys = sorted(k for k in keys if f":redemption:{first}:" in k)
        assert [k.rsplit(":", 1)[1] for k in redemption_keys] == ["after-0", "after-5000"]


async def test_ledger_read_routes(client: httpx.AsyncClient, api_key_factory: Any) -> None:
    admin = await api_key_factory("admin")
    auditor = await api_key_factory("auditor")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    for n in range(3):
        await _fund(client, programme_id, finance, f"f{n}", f"{n + 1}00.00", reference=f"G{n}")
    accounts = (await client.get("/v1/ledger/accounts", params={"programme_id": programme_id}, headers=auditor)).json()
    available = next(a for a in accounts["items"] if a["code"].endswith(":available"))
    assert available["balance"]["posted"] == {"amount": "600.00", "currency": "COP"}
    assert available["flags"] == ["debits_must_not_exceed_credits"]

    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = (
            await client.get(f"/v1/ledger/accounts/{available['id']}/entries", params=params, headers=auditor)
        ).json()
        seen += page["items"]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert [e["balance_after"]["amount"] for e in seen] == ["100.00", "300.00", "600.00"]
    assert [e["kind"] for e in seen] == ["funding"] * 3
    bad = await client.get(
        f"/v1/ledger/accounts/{available['id']}/entries", params={"cursor": "bm9wZQ"}, headers=auditor
    )
    assert_problem(bad, 422)
    assert_problem(await client.get(f"/v1/ledger/accounts/{uuid.uuid4()}/entries", headers=auditor), 404)

    trial = (await client.get("/v1/ledger/trial-balance", headers=finance)).json()
    assert trial["balanced"]
    assert trial["totals"] == [
        {
            "currency": "COP",
            "debits": {"amount": "600.00", "currency": "COP"},
            "credits": {"amount": "600.00", "currency": "COP"},
            "balanced": True,
        }
    ]
    past = (
        await client.get("/v1/ledger/trial-balance", params={"as_of": "2000-01-01T00:00:00Z"}, headers=auditor)
    ).json()
    assert all(line["balance"]["amount"] == "0.00" for line in past["lines"])
    assert_problem(
        await client.get("/v1/ledger/trial-balance", params={"as_of": "2000-01-01T00:00:00"}, headers=auditor), 422
    )


async def test_posting_keys_name_the_business_event(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    admin = await api_key_factory("admin")
    finance = await api_key_factory("finance")
    programme_id = str((await make_programme(client, admin))["id"])
    await _fund(client, programme_id, finance, "fund", "100.00")
    batch, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with session_factory.begin() as session:
        programme = await _programme_row(session, programme_id)
        reserved = await service.reserve(session, programme, batch, 5_000, event="approved")
        single = await service.disburse(session, programme, first, 1_000)
        many = await service.disburse_many(session, [(programme, second, 1_000)])
        returned = await service.return_to_budget(session, programme, first, 1_000, "expired")
    prefix = f"prog:{programme_id}:"
    assert reserved.key == f"{prefix}reservation:{batch}:approved"
    assert single.key == f"{prefix}disbursement:{first}:issued"
    assert [t.key for t in many] == [f"{prefix}disbursement:{second}:issued"]
    assert returned.key == f"{prefix}return:{first}:expired"

    # An entitlement is issued once: a second disbursement of it, single or in bulk, is not a replay
    # to shrug off but a disagreement between the caller and the ledger.
    async def disburse_again(bulk: bool) -> None:
        async with session_factory.begin() as session:
            programme = await _programme_row(session, programme_id)
            if bulk:
                await service.disburse_many(session, [(programme, uuid.uuid4(), 500), (programme, second, 1_000)])
            else:
                await service.disburse(session, programme, first, 1_000)

    for bulk in (False, True):
        with pytest.raises(service.LedgerOutOfStep):
            await disburse_again(bulk)
    balances = await _balances(client, programme_id, admin)
    assert (balances["committed"], balances["disbursed"], balances["returned"]) == ("30.00", "10.00", "10.00")
