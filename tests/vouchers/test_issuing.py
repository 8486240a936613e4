"""§14 Issuing: a paper-voucher batch is issued at once by the built-in provider, each voucher with a code
carrying a check symbol and a signed token that verifies offline against GET /v1/vouchers/keys."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import select, update
from stdnum import luhn

from adapters.providers.base import ProviderConfigError
from cbi_service.app import create_app
from cbi_service.beneficiaries.models import Beneficiary
from cbi_service.beneficiaries.service import personal_data
from cbi_service.entitlements import service as entitlements
from cbi_service.entitlements.models import Entitlement
from cbi_service.vouchers import provider as paper_voucher
from cbi_service.vouchers.codes import ALPHABET
from cbi_service.vouchers.codes import new_code as real_new_code
from tests.issuance.support import assert_identity, balances
from tests.support import assert_problem, make_actors, make_programme, programme_body
from tests.vouchers.support import (
    AMOUNT,
    AMOUNT_MINOR,
    PAPER,
    entitlements_of_batch,
    fetch_jwks,
    paper_voucher_batch,
    verify,
)

CODE = re.compile(r"^[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$")
CLAIMS = {"vid", "prg", "amt", "cur", "exp"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_release_issues_every_voucher_at_once_with_a_code_and_a_verifiable_token(
    client, api_key_factory, session_factory, settings
):
    actors, programme, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 3)

    # One run of the lanes, no provider event and no status poll: the batch is done.
    response = await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)
    assert response.json()["status"] == "completed", response.text
    items = await entitlements_of_batch(client, actors, batch["id"])
    assert [item["status"] for item in items] == ["issued"] * 3

    codes = [item["voucher_code"] for item in items]
    assert len(set(codes)) == 3
    for code in codes:
        assert CODE.match(code), code
        assert luhn.is_valid(code.replace("-", ""), alphabet=ALPHABET)

    jwks = await fetch_jwks(client)
    (key,) = jwks["keys"]
    assert {key["kty"], key["crv"], key["alg"], key["use"]} == {"OKP", "Ed25519", "EdDSA", "sig"}
    for item in items:
        token = item["voucher_token"]
        assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key["kid"], "typ": "JWT"}
        claims = verify(token, jwks)
        assert claims == {
            "vid": item["id"],
            "prg": programme["id"],
            "amt": AMOUNT_MINOR,
            "cur": "COP",
            "exp": int(datetime.fromisoformat(item["expires_at"]).timestamp()),
        }
        issued_at = datetime.fromisoformat(item["issued_at"])
        assert abs(datetime.fromisoformat(item["expires_at"]) - (issued_at + timedelta(days=30))) < timedelta(seconds=5)
        assert item["provider_ref"] == item["voucher_code"]

        one = (await client.get(f"/v1/entitlements/{item['id']}", headers=actors.auditor)).json()
        assert [change["status"] for change in one["history"]] == ["pending", "issued"]

    # The disbursement is in the ledger, posted with the issue.
    figures = await balances(client, actors, programme["id"])
    assert figures["disbursed"] == f"{3 * AMOUNT_MINOR // 100}.00"
    assert figures["committed"] == "0.00"
    assert_identity(figures)


async def test_a_tampered_token_does_not_verify(client, api_key_factory, session_factory, settings):
    actors, _, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 1)
    (item,) = await entitlements_of_batch(client, actors, batch["id"])
    jwks = await fetch_jwks(client)
    header, payload, signature = item["voucher_token"].split(".")
    claims = json.loads(_unb64(payload))
    assert verify(item["voucher_token"], jwks)["amt"] == claims["amt"]

    claims["amt"] *= 10
    forged = ".".join([header, _b64(json.dumps(claims, separators=(",", ":")).encode()), signature])
    with pytest.raises(jwt.InvalidSignatureError):
        verify(forged, jwks)


async def test_no_personal_data_in_the_voucher(client, api_key_factory, session_factory, settings):
    _, _, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 3)
    async with session_factory() as session:
        rows = (
            await session.execute(
                select(Entitlement, Beneficiary)
                .join(Beneficiary, Beneficiary.id == Entitlement.beneficiary_id)
                .where(Entitlement.batch_id == uuid.UUID(batch["id"]))
            )
        ).all()
        opened = await personal_data(session, [person for _, person in rows])
    assert len(rows) == 3
    for entitlement, person in rows:
        assert entitlement.voucher_token is not None
        header, payload, _ = entitlement.voucher_token.split(".")
        assert set(json.loads(_unb64(header))) == {"alg", "kid", "typ"}
        assert set(json.loads(_unb64(payload))) == CLAIMS
        stored = " ".join(
            [
                _unb64(header).decode(),
                _unb64(payload).decode(),
                str(entitlement.voucher_code),
                str(entitlement.provider_ref),
            ]
        )
        held = opened[person.id]
        personal = [held.given_names, held.family_names, held.date_of_birth.isoformat(), str(person.id)]
        assert not [value for value in personal if value in stored], stored


async def test_paper_vouchers_expire_at_the_time_their_token_carries(
    client, api_key_factory, session_factory, settings
):
    actors, programme, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 2)
    first, second = await entitlements_of_batch(client, actors, batch["id"])
    jwks = await fetch_jwks(client)
    for item in (first, second):
        assert datetime.fromisoformat(item["expires_at"]) == datetime.fromtimestamp(
            verify(item["voucher_token"], jwks)["exp"], UTC
        )

    assert await entitlements.expire_due_vouchers(session_factory) == (0, 0)
    # Their validity runs out (the clock moved on): the voucher-expiry job returns the value to the budget.
    async with session_factory.begin() as session:
        await session.execute(
            update(Entitlement)
            .where(Entitlement.id == uuid.UUID(first["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await entitlements.expire_due_vouchers(session_factory) == (1, 1)

    statuses = {item["id"]: item["status"] for item in await entitlements_of_batch(client, actors, batch["id"])}
    assert statuses == {first["id"]: "expired", second["id"]: "issued"}
    figures = await balances(client, actors, programme["id"])
    assert figures["returned"] == AMOUNT
    assert figures["disbursed"] == AMOUNT
    assert_identity(figures)


async def test_an_unredeemed_paper_voucher_can_be_cancelled(client, api_key_factory, session_factory, settings):
    actors, programme, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 1)
    (item,) = await entitlements_of_batch(client, actors, batch["id"])
    response = await client.post(
        f"/v1/entitlements/{item['id']}/cancel", headers={**actors.finance, "Idempotency-Key": "cancel-paper"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    figures = await balances(client, actors, programme["id"])
    assert figures["returned"] == AMOUNT
    assert figures["disbursed"] == "0.00"
    assert_identity(figures)


async def test_a_chunk_that_draws_a_taken_code_is_issued_again_with_new_codes(
    client, api_key_factory, session_factory, settings, monkeypatch
):
    taken = real_new_code()
    drawn: list[str] = []

    def new_code() -> str:
        drawn.append(taken if len(drawn) < 2 else real_new_code())
        return drawn[-1]

    monkeypatch.setattr(paper_voucher, "new_code", new_code)
    actors, _, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 3)

    items = await entitlements_of_batch(client, actors, batch["id"])
    assert [item["status"] for item in items] == ["issued"] * 3
    assert len({item["voucher_code"] for item in items}) == 3
    assert drawn[:2] == [taken, taken]
    assert len(drawn) == 6, "the whole chunk was issued again"


async def test_only_the_paper_voucher_provider_issues_paper_vouchers(client, api_key_factory):
    actors = await make_actors(api_key_factory)
    made = await make_programme(client, actors, **PAPER)
    assert (made["delivery_mechanism"], made["provider"]) == ("paper_voucher", "paper_voucher")

    refused = {
        "built-in provider, other mechanism": ({**PAPER, "delivery_mechanism": "prepaid_card"}, "delivery_mechanism"),
        "built-in provider, e-vouchers": ({**PAPER, "delivery_mechanism": "voucher"}, "delivery_mechanism"),
        "paper vouchers, configured provider": ({**PAPER, "provider": "vouchers"}, "provider"),
        "paper vouchers, unknown provider": ({**PAPER, "provider": "nobody"}, "provider"),
        "paper vouchers without validity": ({**PAPER, "voucher_validity_days": None}, None),
    }
    for what, (overrides, field) in refused.items():
        response = await client.post("/v1/programmes", json=programme_body(**overrides), headers=actors.admin)
        body = assert_problem(response, 422)
        if field is not None:
            assert [error["field"] for error in body["errors"]] == [field], (what, body)
        else:
            assert "voucher_validity_days" in json.dumps(body), (what, body)


def test_the_built_in_name_cannot_be_configured(settings):
    providers = {**settings.providers, "paper_voucher": {"adapter": "voucher", "base_url": "http://127.0.0.1:9"}}
    with pytest.raises(ProviderConfigError, match="built in"):
        create_app(settings.model_copy(update={"providers": providers}))
