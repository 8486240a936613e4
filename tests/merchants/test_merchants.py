"""§14 Merchants: created by an admin with a payout account checked by country (IBAN and BIC, or account
number and bank code), read with what they are owed, and keys bound to one merchant that reach nothing else."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cbi_service.auth.roles import Role
from cbi_service.auth.service import create_api_key
from tests.cli.support import cli, cli_env
from tests.merchants.support import PAYOUT_CO, PAYOUT_DE, make_merchant, merchant_body, merchant_key
from tests.support import assert_problem, make_actors, make_programme
from tests.vouchers.support import PAPER


@pytest.fixture
async def actors(api_key_factory):
    return await make_actors(api_key_factory)


@pytest.fixture
async def programme(client, actors):
    return await make_programme(client, actors, **PAPER)


def _fields(problem):
    return {error["field"]: error["message"] for error in problem["errors"]}


async def test_an_admin_creates_a_merchant_that_owes_nothing_yet(client, actors, programme):
    created = await make_merchant(client, actors.admin, [programme["id"]])
    assert created["name"] == "Tienda La Esperanza"
    assert created["country"] == "CO"
    assert created["currency"] == "COP"
    assert created["programme_ids"] == [programme["id"]]
    assert created["payout"] == {**PAYOUT_CO, "iban": None, "bic": None}
    assert created["unsettled"] == {"amount": "0.00", "currency": "COP"}

    for reader in (actors.admin, actors.finance, actors.auditor):
        one = await client.get(f"/v1/merchants/{created['id']}", headers=reader)
        assert one.status_code == 200, one.text
        assert one.json() == created
    listed = await client.get("/v1/merchants", params={"programme_id": programme["id"]}, headers=actors.finance)
    assert [m["id"] for m in listed.json()["items"]] == [created["id"]]
    assert "unsettled" not in listed.json()["items"][0]
    other = await client.get("/v1/merchants", params={"programme_id": str(uuid.uuid4())}, headers=actors.finance)
    assert other.json()["items"] == []


async def test_each_of_its_programmes_opens_a_payable_account_for_it(client, actors, programme):
    second = await make_programme(client, actors, **PAPER, name="Alimentos Cúcuta")
    merchant = await make_merchant(client, actors.admin, [programme["id"], second["id"]])
    for programme_id in (programme["id"], second["id"]):
        params = {"programme_id": programme_id}
        response = await client.get("/v1/ledger/accounts", params=params, headers=actors.auditor)
        codes = {account["code"] for account in response.json()["items"]}
        assert f"prog:{programme_id}:payable:{merchant['id']}" in codes


async def test_an_iban_country_takes_an_iban_and_bic_stored_compact(client, actors, programme):
    created = await make_merchant(client, actors.admin, [programme["id"]], country="DE", payout=PAYOUT_DE)
    assert created["payout"] == {
        "account_name": PAYOUT_DE["account_name"],
        "iban": "DE89370400440532013000",
        "bic": "COBADEFFXXX",
        "account_number": None,
        "bank_code": None,
    }


@pytest.mark.parametrize(
    ("country", "payout", "fields"),
    [
        # One wrong check digit.
        ("DE", {**PAYOUT_DE, "iban": "DE89 3704 0044 0532 0130 01"}, {"payout.iban"}),
        ("DE", {**PAYOUT_DE, "bic": "COBAZZFF"}, {"payout.bic"}),
        ("DE", {**PAYOUT_DE, "iban": "FR14 2004 1010 0505 0001 3M02 606"}, {"payout.iban"}),
        ("DE", {"account_name": "X", "account_number": "1", "bank_code": "2"}, {
            "payout.iban", "payout.bic", "payout.account_number", "payout.bank_code"
        }),
        ("CO", {**PAYOUT_CO, "iban": "DE89370400440532013000"}, {"payout.iban"}),
        ("CO", {"account_name": "X", "account_number": "0123"}, {"payout.bank_code"}),
        ("CO", {**PAYOUT_CO, "bic": "nonsense"}, {"payout.bic"}),
    ],
)  # fmt: skip
async def test_a_payout_account_that_does_not_fit_its_country_is_refused(
    client, actors, programme, country, payout, fields
):
    body = merchant_body([programme["id"]], country=country, payout=payout)
    problem = assert_problem(await client.post("/v1/merchants", json=body, headers=actors.admin), 422)
    assert set(_fields(problem)) == fields, problem


async def test_programmes_must_exist_be_paper_voucher_and_share_a_currency(client, actors, programme):
    cards = await make_programme(client, actors)
    dollars = await make_programme(client, actors, **PAPER, currency="USD")
    missing = str(uuid.uuid4())
    body = merchant_body([programme["id"], cards["id"], missing, dollars["id"]])
    problem = assert_problem(await client.post("/v1/merchants", json=body, headers=actors.admin), 422)
    assert set(_fields(problem)) == {"programme_ids[1]", "programme_ids[2]", "programme_ids"}, problem
    twice = merchant_body([programme["id"], programme["id"]])
    problem = assert_problem(await client.post("/v1/merchants", json=twice, headers=actors.admin), 422)
    assert "programme_ids" in _fields(problem)


async def test_creation_is_audited_without_the_full_account_number(client, actors, programme, session_factory):
    created = await make_merchant(client, actors.admin, [programme["id"]])
    async with session_factory() as session:
        row = (
            await session.execute(
                text(
                    "SELECT actor_name, after FROM audit_events WHERE action = 'merchant.created' AND resource_id = :id"
                ),
                {"id": created["id"]},
            )
        ).one()
    assert row.actor_name == "admin"
    assert row.after["payout_account"] == "…6789"
    assert PAYOUT_CO["account_number"] not in str(row.after)


async def test_a_merchant_key_reads_its_own_merchant_and_reaches_nothing_else(
    client, actors, programme, api_key_factory
):
    mine = await make_merchant(client, actors.admin, [programme["id"]])
    theirs = await make_merchant(client, actors.admin, [programme["id"]], name="Otra tienda")
    key = await merchant_key(api_key_factory, mine["id"])

    own = await client.get(f"/v1/merchants/{mine['id']}", headers=key)
    assert own.status_code == 200, own.text
    assert own.json()["unsettled"] == {"amount": "0.00", "currency": "COP"}
    assert_problem(await client.get(f"/v1/merchants/{theirs['id']}", headers=key), 404)
    for path in ("/v1/merchants", "/v1/programmes", f"/v1/programmes/{programme['id']}/balances", "/v1/entitlements"):
        problem = assert_problem(await client.get(path, headers=key), 403)
        assert "merchant" not in problem["allowed_roles"]


async def test_a_merchant_role_goes_with_one_merchant_and_alone(session_factory, client, actors, programme):
    merchant = uuid.UUID((await make_merchant(client, actors.admin, [programme["id"]]))["id"])
    refused = [
        ([Role.merchant], None),
        ([Role.merchant, Role.finance], merchant),
        ([Role.admin], merchant),
    ]
    for roles, merchant_id in refused:
        with pytest.raises(ValueError, match="merchant"):
            async with session_factory.begin() as session:
                await create_api_key(session, "shop", roles, merchant_id=merchant_id)
    # The database holds the same rule, whatever writes the row.
    statement = text(
        "INSERT INTO api_keys (id, name, prefix, key_hash, roles, merchant_id)"
        " VALUES (:id, 'x', 'cbi_', :hash, ARRAY['merchant','admin'], :merchant)"
    )
    with pytest.raises(IntegrityError, match="merchant_key"):
        async with session_factory.begin() as session:
            await session.execute(statement, {"id": uuid.uuid4(), "hash": uuid.uuid4().hex, "merchant": merchant})


async def test_apikey_create_binds_a_key_to_a_merchant(client, actors, programme, database_url):
    merchant = await make_merchant(client, actors.admin, [programme["id"]])
    env = cli_env(DATABASE_URL=database_url)
    created = cli("apikey", "create", "--name", "shop", "--role", "merchant", "--merchant", merchant["id"], env=env)
    assert created.returncode == 0, created.stderr
    key = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    assert (await client.get(f"/v1/merchants/{merchant['id']}", headers=key)).status_code == 200

    unknown = cli("apikey", "create", "--name", "x", "--role", "merchant", "--merchant", str(uuid.uuid4()), env=env)
    assert unknown.returncode != 0
    assert "no merchant" in unknown.stderr
    unbound = cli("apikey", "create", "--name", "x", "--role", "merchant", env=env)
    assert unbound.returncode != 0
    assert "needs a merchant" in unbound.stderr
