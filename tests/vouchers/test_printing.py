"""§14 Printing: a paper-voucher batch's issued vouchers on A4 sheets to cut, each QR decoding back to its
entitlement's token, the face showing code, amount, expiry, programme and the holder's given names with the
family initial (never the family name or a document), the printing audited."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pypdf
import pypdfium2
import zxingcpp

from cbi_service.vouchers.sheets import PER_PAGE, VoucherFace, VoucherSheets, printed_amount
from tests.beneficiaries.support import person_body
from tests.issuance.support import released_batch
from tests.support import assert_problem, make_actors, make_programme
from tests.vouchers.support import PAPER, entitlements_of_batch, paper_voucher_batch

MARIA = person_body()
LUIS = person_body(
    given_names="Luis Alberto", family_names="Pérez Gómez", sex="male", date_of_birth="1980-01-02",
    documents=[{"type": "passport", "number": "VE9876543", "issuing_country": "VE"}],
    phone=None, external_ref="CUC-0002",
)  # fmt: skip
RENDER_DPI = 200


def pages_of(pdf: bytes) -> list[Any]:
    """Each page rendered as a printer would see it, as a PIL image."""
    document = pypdfium2.PdfDocument(pdf)
    try:
        return [document[index].render(scale=RENDER_DPI / 72).to_pil() for index in range(len(document))]
    finally:
        document.close()


def decoded(page: Any) -> list[str]:
    """The text of every QR code zxing-cpp finds on the page image."""
    return [found.text for found in zxingcpp.read_barcodes(page, formats=zxingcpp.BarcodeFormat.QRCode)]


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


async def get_sheets(client: Any, batch_id: str, headers: dict[str, str]) -> Any:
    return await client.get(f"/v1/payment-batches/{batch_id}/vouchers.pdf", headers=headers)


async def test_every_issued_voucher_is_printed_with_a_qr_that_decodes_to_its_token(
    client, api_key_factory, session_factory, settings
):
    actors, programme, batch = await paper_voucher_batch(
        client, api_key_factory, session_factory, settings, PER_PAGE - 1, people=[MARIA, LUIS]
    )
    vouchers = await entitlements_of_batch(client, actors, batch["id"])
    assert len(vouchers) == PER_PAGE + 1

    response = await get_sheets(client, batch["id"], actors.officer)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"] == f'attachment; filename="vouchers-{batch["id"]}.pdf"'
    first, second = pages_of(response.content)
    on_first, on_second = decoded(first), decoded(second)
    assert len(on_first) == PER_PAGE
    assert len(on_second) == 1
    # In entitlement id order, which is the order the API lists them in.
    assert sorted(on_first + on_second) == sorted(v["voucher_token"] for v in vouchers)
    assert set(on_first) == {v["voucher_token"] for v in vouchers[:PER_PAGE]}

    text = text_of(response.content)
    for voucher in vouchers:
        assert voucher["voucher_code"] in text
    assert text.count("150 000.00 COP") == len(vouchers)
    expiry = datetime.fromisoformat(vouchers[0]["expires_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert expiry in text
    assert " ".join(text.split()).count(programme["name"]) == len(vouchers)  # on two lines
    assert "María José R." in text
    assert "Luis Alberto P." in text
    assert "Persona 0 P." in text


async def test_the_sheets_show_no_family_name_document_birth_date_or_phone(
    client, api_key_factory, session_factory, settings
):
    actors, _, batch = await paper_voucher_batch(
        client, api_key_factory, session_factory, settings, 0, people=[MARIA, LUIS]
    )
    text = text_of((await get_sheets(client, batch["id"], actors.officer)).content)
    assert "María José R." in text
    assert "Luis Alberto P." in text
    for held in ("Rodríguez", "Rodr", "de la Cruz", "Pérez", "Gómez", "12.345.678", "12345678", "VE9876543",
                 "1990", "1980", "0412", "555 12 34", "CUC-000"):  # fmt: skip
        assert held not in text, held


async def test_only_issued_vouchers_are_printed_and_the_printing_is_audited_without_names(
    client, api_key_factory, session_factory, settings
):
    actors, _, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 3)
    vouchers = await entitlements_of_batch(client, actors, batch["id"])
    cancelled = vouchers[1]
    response = await client.post(
        f"/v1/entitlements/{cancelled['id']}/cancel", headers={**actors.finance, "Idempotency-Key": "cancel-print"}
    )
    assert response.status_code == 200, response.text

    response = await get_sheets(client, batch["id"], actors.officer)

    assert response.status_code == 200, response.text
    (page,) = pages_of(response.content)
    assert sorted(decoded(page)) == sorted(v["voucher_token"] for v in vouchers if v is not cancelled)
    assert cancelled["voucher_code"] not in text_of(response.content)
    events = await client.get("/v1/audit-events", params={"action": "batch.vouchers_printed"}, headers=actors.auditor)
    assert events.status_code == 200, events.text
    (event,) = [e for e in events.json()["items"] if e["resource_id"] == batch["id"]]
    assert event["resource_type"] == "payment_batch"
    assert event["after"] == {"count": 2}
    assert "Persona" not in json.dumps(event)
    assert "Prueba" not in json.dumps(event)


async def test_only_a_programme_officer_prints(client, api_key_factory, session_factory, settings):
    actors, _, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 1)
    for role in ("admin", "registrar", "approver", "finance", "auditor"):
        problem = assert_problem(await get_sheets(client, batch["id"], await api_key_factory(role)), 403)
        assert problem["allowed_roles"] == ["programme_officer"]
    assert_problem(await client.get(f"/v1/payment-batches/{batch['id']}/vouchers.pdf"), 401)
    bad_key = {"Authorization": "Bearer not-a-key"}
    assert_problem(await get_sheets(client, batch["id"], bad_key), 401)
    events = await client.get("/v1/audit-events", params={"action": "batch.vouchers_printed"}, headers=actors.auditor)
    assert [e for e in events.json()["items"] if e["resource_id"] == batch["id"]] == []


async def test_a_batch_of_another_mechanism_has_nothing_to_print(client, api_key_factory, session_factory):
    actors, _, batch = await released_batch(client, api_key_factory, session_factory, 1)
    problem = assert_problem(await get_sheets(client, batch["id"], actors.officer), 409)
    assert "paper-voucher" in problem["detail"]


async def test_a_batch_before_release_has_no_vouchers_to_print(client, api_key_factory, session_factory, settings):
    actors, _, batch = await paper_voucher_batch(
        client, api_key_factory, session_factory, settings, 2, release_it=False
    )
    problem = assert_problem(await get_sheets(client, batch["id"], actors.officer), 409)
    assert "no issued vouchers" in problem["detail"]
    events = await client.get("/v1/audit-events", params={"action": "batch.vouchers_printed"}, headers=actors.auditor)
    assert [e for e in events.json()["items"] if e["resource_id"] == batch["id"]] == []


async def test_an_unknown_batch_is_a_404(client, api_key_factory):
    actors = await make_actors(api_key_factory)
    await make_programme(client, actors, **PAPER)
    assert_problem(await get_sheets(client, str(uuid.uuid4()), actors.officer), 404)


def _face(**overrides: Any) -> VoucherFace:
    fields: dict[str, Any] = {
        "token": "eyJhbGciOiJFZERTQSJ9.e30.c2ln",
        "code": "7KQM-X3PD-W9R2",
        "amount_minor": 1500,
        "currency": "COP",
        "expires_at": datetime(2027, 1, 31, 23, 59, tzinfo=UTC),
        "programme": "Multipurpose cash",
        "holder": "María José G.",
    }
    return VoucherFace(**(fields | overrides))


def test_amounts_carry_the_currency_s_own_decimals():
    assert printed_amount(15_000_000, "COP") == "150 000.00 COP"
    assert printed_amount(1500, "JPY") == "1 500 JPY"
    assert printed_amount(1_234_567, "KWD") == "1 234.567 KWD"
    assert printed_amount(5, "USD") == "0.05 USD"


def test_text_beyond_the_built_in_fonts_is_transliterated_and_long_text_is_cut():
    sheets = VoucherSheets("test")
    sheets.add(
        [
            _face(holder="Олег Ōsaka W.", programme="Asistencia multipropósito a familias en tránsito, Cúcuta 2026"),
            _face(holder=None),
        ]
    )
    text = text_of(sheets.output())
    assert "Oleg Osaka W." in text
    assert "Asistencia multipropósito" in text
    assert "\u2026" in text
    assert "2026" not in text
    assert text.endswith("HOLDER\n-")  # a holder whose data was erased
