"""§14 Settling: a merchant's unsettled redemptions become a draft settlement, which goes through the
maker-checker of batches; once released its pain.001 validates against the official schema with the
settlement's total as control sum, and once paid the ledger moves the payable to the bank."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from lxml import etree
from pydantic import ValidationError
from sqlalchemy import text

from cbi_service.kit.bank_accounts import SettlementAccount
from cbi_service.kit.settings import Settings
from cbi_service.settlements import pain001
from tests.merchants.support import PAYOUT_CO, PAYOUT_DE, make_merchant, merchant_body, merchant_key
from tests.redemptions.support import Shop, checked_balances, redeem, scene, unsettled
from tests.support import make_programme
from tests.vouchers.support import PAPER

NS = {"p": pain001.NAMESPACE}
DEBTOR = SettlementAccount(name="Agencia Humanitaria Colombia", account_number="2000-445566", bank_code="1007")


@pytest.fixture
def settlement_account(settings):
    """The agency's account settlements are paid from, configured for the app under test."""
    settings.settlement_account = DEBTOR
    settings.agency_name = "Agencia Humanitaria"
    return DEBTOR


async def _post(client, path, headers, body=None):
    return await client.post(path, json=body or {}, headers=headers | {"Idempotency-Key": str(uuid.uuid4())})


async def _approved(client, s, finance):
    """A settlement of the first shop's redemptions, created by `finance`, submitted and approved by as many
    approvers as it needs."""
    created = await _post(client, "/v1/merchant-settlements", finance, {"merchant_id": s.shops[0].id})
    assert created.status_code == 201, created.text
    settlement = created.json()
    submitted = await _post(client, f"/v1/merchant-settlements/{settlement['id']}/submit", finance)
    assert submitted.status_code == 200, submitted.text
    for approver in (s.actors.approver1, s.actors.approver2)[: submitted.json()["approvals_needed"]]:
        approved = await _post(
            client, f"/v1/merchant-settlements/{settlement['id']}/approvals", approver, {"decision": "approve"}
        )
        assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    return approved.json()


async def test_a_settlement_is_approved_released_and_paid_and_the_ledger_follows(
    client, api_key_factory, session_factory, settings, settlement_account
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=3, shops=2)
    for voucher, shop, amount in zip(
        s.vouchers, [s.shops[0], s.shops[0], s.shops[1]], ("40000.00", "150000.00", "1.00"), strict=True
    ):
        assert (await redeem(client, shop, amount, token=voucher["voucher_token"])).status_code == 201
    before = await checked_balances(client, s.actors, s.programme["id"])
    creator = await api_key_factory("finance", "approver", name="finance-maker")
    releaser = await api_key_factory("finance", name="finance-releaser")

    created = await _post(client, "/v1/merchant-settlements", creator, {"merchant_id": s.shops[0].id})
    assert created.status_code == 201, created.text
    settlement = created.json()
    assert settlement["status"] == "draft"
    assert settlement["total"] == {"amount": "190000.00", "currency": "COP"}
    assert settlement["redemption_count"] == 2
    assert settlement["programmes"] == [{"programme_id": s.programme["id"], "total": settlement["total"]}]
    again = await _post(client, "/v1/merchant-settlements", creator, {"merchant_id": s.shops[0].id})
    assert again.status_code == 409, "a redemption is never in two live settlements"

    sid = settlement["id"]
    early = await client.get(f"/v1/merchant-settlements/{sid}/pain001.xml", headers=releaser)
    assert early.status_code == 409, "no payment file before release"
    submitted = await _post(client, f"/v1/merchant-settlements/{sid}/submit", creator)
    assert submitted.json()["approvals_needed"] == 2, "the programme's two approvals, as for its batches"
    own = await _post(client, f"/v1/merchant-settlements/{sid}/approvals", creator, {"decision": "approve"})
    assert own.status_code == 403, "the creator never approves"
    first = await _post(
        client, f"/v1/merchant-settlements/{sid}/approvals", s.actors.approver1, {"decision": "approve"}
    )
    assert first.json()["status"] == "pending_approval"
    same = await _post(client, f"/v1/merchant-settlements/{sid}/approvals", s.actors.approver1, {"decision": "approve"})
    assert same.status_code == 409, "approvers are distinct"
    second = await _post(
        client, f"/v1/merchant-settlements/{sid}/approvals", s.actors.approver2, {"decision": "approve"}
    )
    assert second.json()["status"] == "approved"
    assert (await _post(client, f"/v1/merchant-settlements/{sid}/release", s.actors.approver1)).status_code == 403
    assert (await _post(client, f"/v1/merchant-settlements/{sid}/release", creator)).status_code == 403
    released = await _post(client, f"/v1/merchant-settlements/{sid}/release", releaser)
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"

    document = await client.get(f"/v1/merchant-settlements/{sid}/pain001.xml", headers=s.actors.auditor)
    assert document.status_code == 200, document.text
    assert document.headers["content-type"].startswith("application/xml")
    pain001.validate(document.content)
    tree = etree.fromstring(document.content)
    assert tree.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=NS) == "190000.00"
    assert tree.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=NS) == "1"
    assert tree.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:InitgPty/p:Nm", namespaces=NS) == "Agencia Humanitaria"
    payment = tree.find("p:CstmrCdtTrfInitn/p:PmtInf", namespaces=NS)
    assert payment.findtext("p:CtrlSum", namespaces=NS) == "190000.00"
    assert payment.findtext("p:DbtrAcct/p:Id/p:Othr/p:Id", namespaces=NS) == "2000-445566"
    [transfer] = payment.findall("p:CdtTrfTxInf", namespaces=NS)
    amounts = [Decimal(a.text) for a in payment.iterfind(".//p:InstdAmt", namespaces=NS)]
    assert sum(amounts) == Decimal("190000.00")
    assert transfer.find("p:Amt/p:InstdAmt", namespaces=NS).get("Ccy") == "COP"
    assert transfer.findtext("p:PmtId/p:EndToEndId", namespaces=NS) == uuid.UUID(sid).hex
    assert transfer.findtext("p:CdtrAcct/p:Id/p:Othr/p:Id", namespaces=NS) == "0123456789"
    assert transfer.findtext("p:CdtrAgt/p:FinInstnId/p:Othr/p:Id", namespaces=NS) == "1007"
    assert transfer.findtext("p:Cdtr/p:Nm", namespaces=NS) == "Tienda La Esperanza SAS"
    assert await checked_balances(client, s.actors, s.programme["id"]) == before, "release moves no money"

    paid = await _post(client, f"/v1/merchant-settlements/{sid}/paid", releaser, {"bank_reference": "BANCO-2026-0042"})
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["bank_reference"]) == ("paid", "BANCO-2026-0042")
    twice = await _post(client, f"/v1/merchant-settlements/{sid}/paid", releaser, {"bank_reference": "BANCO-2026-0043"})
    assert twice.status_code == 409, "a settlement is paid once"
    after = await checked_balances(client, s.actors, s.programme["id"])
    assert after == before, "paying a merchant changes no §3 balance: the money was already redeemed"
    assert await unsettled(client, s.actors, s.shops[0]) == "0.00"
    assert await unsettled(client, s.actors, s.shops[1]) == "1.00", "another merchant's debt is untouched"

    accounts = await client.get(
        "/v1/ledger/accounts", params={"programme_id": s.programme["id"]}, headers=s.actors.auditor
    )
    by_code = {a["code"]: a for a in accounts.json()["items"]}
    bank = by_code[f"prog:{s.programme['id']}:bank"]
    assert bank["balance"]["posted"]["amount"] == "190000.00"
    entries = await client.get(f"/v1/ledger/accounts/{bank['id']}/entries", headers=s.actors.auditor)
    [entry] = entries.json()["items"]
    assert entry["kind"] == "settlement"
    assert entry["references"]["settlement_id"] == sid
    assert entry["references"]["bank_reference"] == "BANCO-2026-0042"

    audit = await client.get("/v1/audit-events", params={"entity_id": sid}, headers=s.actors.auditor)
    actions = {e["action"] for e in audit.json()["items"]}
    assert {"merchant_settlement.created", "merchant_settlement.released", "merchant_settlement.paid"} <= actions


async def test_a_rejected_or_cancelled_settlement_leaves_its_redemptions_to_settle_again(
    client, api_key_factory, session_factory, settings, settlement_account
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    assert (await redeem(client, s.shops[0], "5000.00", token=s.vouchers[0]["voucher_token"])).status_code == 201
    finance = s.actors.finance
    first = (await _post(client, "/v1/merchant-settlements", finance, {"merchant_id": s.shops[0].id})).json()
    await _post(client, f"/v1/merchant-settlements/{first['id']}/submit", finance)
    rejected = await _post(
        client,
        f"/v1/merchant-settlements/{first['id']}/approvals",
        s.actors.approver,
        {"decision": "reject", "comment": "wrong shop"},
    )
    assert rejected.json()["status"] == "rejected"
    second = await _post(client, "/v1/merchant-settlements", finance, {"merchant_id": s.shops[0].id})
    assert second.status_code == 201, second.text
    assert second.json()["total"]["amount"] == "5000.00"
    cancelled = await _post(client, f"/v1/merchant-settlements/{second.json()['id']}/cancel", finance)
    assert cancelled.json()["status"] == "cancelled"
    approved = await _approved(client, s, finance)
    releaser = await api_key_factory("finance", name="releaser")
    url = f"/v1/merchant-settlements/{approved['id']}/release"
    assert (await client.post(url, headers=releaser)).status_code == 422, "release needs an Idempotency-Key"
    once = await client.post(url, headers=releaser | {"Idempotency-Key": "release-1"})
    again = await client.post(url, headers=releaser | {"Idempotency-Key": "release-1"})
    assert (once.status_code, again.status_code, again.json()) == (200, 200, once.json()), "a retry is replayed"
    late = await _post(client, f"/v1/merchant-settlements/{approved['id']}/cancel", finance)
    assert late.status_code == 409, "a released settlement is with the bank: it cannot be cancelled"
    listed = await client.get("/v1/merchant-settlements", params={"merchant_id": s.shops[0].id}, headers=finance)
    assert [x["status"] for x in listed.json()["items"]] == ["rejected", "cancelled", "released"]


async def test_a_settlement_the_bank_refused_is_paid_by_a_new_one_and_never_twice(
    client, api_key_factory, session_factory, settings, settlement_account
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    assert (await redeem(client, s.shops[0], "7000.00", token=s.vouchers[0]["voucher_token"])).status_code == 201
    before = await checked_balances(client, s.actors, s.programme["id"])
    finance = s.actors.finance
    releaser = await api_key_factory("finance", name="releaser")
    approved = await _approved(client, s, finance)
    sid = approved["id"]
    early = await _post(client, f"/v1/merchant-settlements/{sid}/refused", finance, {"reason": "AC04 closed"})
    assert early.status_code == 409, "only a released settlement went to the bank"
    assert (await _post(client, f"/v1/merchant-settlements/{sid}/release", releaser)).status_code == 200

    url = f"/v1/merchant-settlements/{sid}/refused"
    for bad in ({}, {"reason": ""}, {"reason": "x" * 141}, {"reason": "AC04", "extra": 1}):
        assert (await _post(client, url, releaser, bad)).status_code == 422, bad
    key = releaser | {"Idempotency-Key": "refused-1"}
    body = {"reason": "AC04 closed account number"}
    refused, again = [await client.post(url, json=body, headers=key) for _ in range(2)]
    assert refused.status_code == 200, refused.text
    assert (refused.json()["status"], refused.json()["refusal_reason"]) == ("refused", body["reason"])
    assert refused.json()["closed_at"] is not None
    assert (again.status_code, again.json()) == (200, refused.json()), "a retry is replayed"
    assert (await _post(client, url, releaser, body)).status_code == 409, "refused once"
    paid = await _post(client, f"/v1/merchant-settlements/{sid}/paid", releaser, {"bank_reference": "B-1"})
    assert paid.status_code == 409, "a refused settlement is never paid"
    file = await client.get(f"/v1/merchant-settlements/{sid}/pain001.xml", headers=s.actors.auditor)
    assert file.status_code == 409, "a refused payment file is never served again, so never sent twice"
    assert await checked_balances(client, s.actors, s.programme["id"]) == before, "nothing was paid or posted"
    assert await unsettled(client, s.actors, s.shops[0]) == "7000.00", "the merchant is still owed"

    anew = await _approved(client, s, finance)
    assert (anew["redemption_count"], anew["total"]["amount"]) == (1, "7000.00")
    assert (await _post(client, f"/v1/merchant-settlements/{anew['id']}/release", releaser)).status_code == 200
    settled = await _post(
        client, f"/v1/merchant-settlements/{anew['id']}/paid", releaser, {"bank_reference": "BANCO-2026-0099"}
    )
    assert settled.status_code == 200, settled.text
    assert await unsettled(client, s.actors, s.shops[0]) == "0.00"
    async with session_factory() as session:
        rows = await session.execute(
            text(
                "SELECT s.status, i.live FROM merchant_settlement_items i"
                " JOIN merchant_settlements s ON s.id = i.settlement_id"
            )
        )
        assert sorted(tuple(r) for r in rows) == [("paid", True), ("refused", False)]
    audit = await client.get("/v1/audit-events", params={"entity_id": sid}, headers=s.actors.auditor)
    [event] = [e for e in audit.json()["items"] if e["action"] == "merchant_settlement.refused"]
    assert event["after"]["refusal_reason"] == body["reason"]


async def test_settlements_drafted_at_once_for_one_merchant_pay_each_redemption_once(
    client, api_key_factory, session_factory, settings, settlement_account
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=4, shops=1)
    for voucher in s.vouchers:
        assert (await redeem(client, s.shops[0], "1000.00", token=voucher["voucher_token"])).status_code == 201
    finance = s.actors.finance
    answers = await asyncio.gather(
        *(_post(client, "/v1/merchant-settlements", finance, {"merchant_id": s.shops[0].id}) for _ in range(8))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7, [a.text for a in answers]
    [made] = [a.json() for a in answers if a.status_code == 201]
    assert (made["redemption_count"], made["total"]["amount"]) == (4, "4000.00")


async def test_release_needs_a_settlement_account_and_a_merchant_sees_only_its_own(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=2, shops=2)
    for voucher, shop in zip(s.vouchers, s.shops, strict=True):
        assert (await redeem(client, shop, "1000.00", token=voucher["voucher_token"])).status_code == 201
    approved = await _approved(client, s, s.actors.finance)
    releaser = await api_key_factory("finance", name="releaser")
    refused = await _post(client, f"/v1/merchant-settlements/{approved['id']}/release", releaser)
    assert refused.status_code == 409
    assert "CBI_SETTLEMENT_ACCOUNT" in refused.json()["detail"] + refused.json()["title"]

    own = await client.get(f"/v1/merchant-settlements/{approved['id']}", headers=s.shops[0].key)
    assert own.status_code == 200
    assert own.json()["approvals"] == [], "a merchant sees what it is paid, not who decided it"
    assert approved["approvals"], "staff see the approvals"
    other = await client.get(f"/v1/merchant-settlements/{approved['id']}", headers=s.shops[1].key)
    assert other.status_code == 404
    listed = await client.get("/v1/merchant-settlements", headers=s.shops[1].key)
    assert listed.json()["items"] == []
    assert (await client.get("/v1/merchant-settlements", headers=s.shops[0].key)).json()["items"][0]["id"] == approved[
        "id"
    ]


async def test_bad_input_is_a_clear_4xx(client, api_key_factory, session_factory, settings, settlement_account):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    finance = s.actors.finance
    unknown = await _post(client, "/v1/merchant-settlements", finance, {"merchant_id": str(uuid.uuid4())})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "merchant_id"
    nothing = await _post(client, "/v1/merchant-settlements", finance, {"merchant_id": s.shops[0].id})
    assert nothing.status_code == 409, "no redemption to settle"
    assert (await _post(client, "/v1/merchant-settlements", finance, {"merchant": "x"})).status_code == 422
    assert (await client.get(f"/v1/merchant-settlements/{uuid.uuid4()}", headers=finance)).status_code == 404
    assert (await redeem(client, s.shops[0], "1000.00", token=s.vouchers[0]["voucher_token"])).status_code == 201
    approved = await _approved(client, s, finance)
    releaser = await api_key_factory("finance", name="releaser")
    early = await _post(client, f"/v1/merchant-settlements/{approved['id']}/paid", releaser, {"bank_reference": "X1"})
    assert early.status_code == 409, "not released, not paid"
    await _post(client, f"/v1/merchant-settlements/{approved['id']}/release", releaser)
    for reference in ("", "x" * 36, "<script>"):
        bad = await _post(
            client, f"/v1/merchant-settlements/{approved['id']}/paid", releaser, {"bank_reference": reference}
        )
        assert bad.status_code == 422, reference


async def test_an_iban_merchant_is_paid_to_its_iban_and_a_file_the_schema_refuses_is_never_served(
    client, api_key_factory, session_factory, settings
):
    settings.settlement_account = SettlementAccount(name="Agency", iban="DE02120300000000202051", bic="BYLADEM1001")
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=0)
    merchant = await make_merchant(client, s.actors.admin, [s.programme["id"]], country="DE", payout=PAYOUT_DE)
    shop = Shop(merchant, await merchant_key(api_key_factory, merchant["id"]))
    assert (await redeem(client, shop, "150000.00", token=s.vouchers[0]["voucher_token"])).status_code == 201
    s.shops.append(shop)
    approved = await _approved(client, s, s.actors.finance)
    releaser = await api_key_factory("finance", name="releaser")
    await _post(client, f"/v1/merchant-settlements/{approved['id']}/release", releaser)
    document = await client.get(f"/v1/merchant-settlements/{approved['id']}/pain001.xml", headers=releaser)
    tree = etree.fromstring(document.content)
    transfer = tree.find(".//p:CdtTrfTxInf", namespaces=NS)
    assert transfer.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=NS) == "DE89370400440532013000"
    assert transfer.findtext("p:CdtrAgt/p:FinInstnId/p:BIC", namespaces=NS) == "COBADEFFXXX"
    assert tree.findtext(".//p:DbtrAcct/p:Id/p:IBAN", namespaces=NS) == "DE02120300000000202051"

    broken = document.content.replace(b"<PmtMtd>TRF</PmtMtd>", b"<PmtMtd>CASH</PmtMtd>")
    with pytest.raises(pain001.InvalidPaymentFile, match="PmtMtd"):
        pain001.validate(broken)


def test_the_settlement_account_is_read_from_json_and_a_bad_one_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(
        "CBI_SETTLEMENT_ACCOUNT", '{"name": "Agency", "iban": "de89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"}'
    )
    assert Settings(database_url=None).settlement_account == SettlementAccount(
        name="Agency", iban="DE89370400440532013000", bic="COBADEFFXXX"
    )
    for bad in (
        '{"name": "Agency", "iban": "DE00 1234", "bic": "COBADEFFXXX"}',
        '{"name": "Agency", "iban": "DE89370400440532013000"}',
        '{"name": "A", "account_number": "1"}',
    ):
        monkeypatch.setenv("CBI_SETTLEMENT_ACCOUNT", bad)
        with pytest.raises(ValidationError, match="settlement_account"):
            Settings(database_url=None)


async def test_an_account_holder_name_a_payment_file_cannot_carry_is_refused_when_entered(client, api_key_factory):
    admin = await api_key_factory("admin")
    programme = await make_programme(client, admin, **PAPER)
    body = merchant_body([programme["id"]], payout=PAYOUT_CO | {"account_name": "Tienda\x01La Esperanza"})
    refused = await client.post("/v1/merchants", json=body, headers=admin | {"Idempotency-Key": str(uuid.uuid4())})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "payout.account_name"
