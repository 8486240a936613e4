"""Webhook bodies → canonical events, and the refusals the webhook route turns into 4xx."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from adapters.providers import MalformedEvent, ProviderEvent
from adapters.providers.events import parse_card_event, parse_voucher_event

ENTITLEMENT = uuid4()


def body(type_: str, **data: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "timestamp": "2026-11-22T08:30:00.125Z",
        "data": {"entitlement_id": str(ENTITLEMENT), "provider_ref": "prv_1", **data},
    }


def test_card_issue_keeps_token_and_last_four_only() -> None:
    payload = body("entitlement.issued", card_token="tok_9", card_last4="0042", card_number="4111111111110042")

    event = parse_card_event(payload)

    assert event == ProviderEvent(
        type="entitlement.issued",
        timestamp=datetime(2026, 11, 22, 8, 30, 0, 125000, tzinfo=UTC),
        entitlement_id=ENTITLEMENT,
        provider_ref="prv_1",
        card_token="tok_9",
        card_last4="0042",
    )
    assert "4111111111110042" not in repr(event)


def test_voucher_events() -> None:
    issued = parse_voucher_event(body("entitlement.issued", voucher_code="ABCD-EFGH-JKLM"))
    failed = parse_voucher_event(body("entitlement.failed", reason="kyc_incomplete", retryable=False))
    redeemed = parse_voucher_event(
        body("voucher.redeemed", amount={"amount": "12500.50", "currency": "COP"}, merchant="Tienda")
    )
    flat = parse_voucher_event(body("voucher.redeemed", amount="300", currency="CLP", merchant="Almacén"))
    expired = parse_voucher_event(body("voucher.expired"))

    assert issued.voucher_code == "ABCD-EFGH-JKLM"
    assert (failed.reason, failed.retryable) == ("kyc_incomplete", False)
    assert (redeemed.amount_minor, redeemed.currency, redeemed.merchant) == (12_500_50, "COP", "Tienda")
    assert (flat.amount_minor, flat.currency) == (300, "CLP")
    assert expired.type == "voucher.expired"
    assert expired.entitlement_id == ENTITLEMENT


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"timestamp": "2026-11-22T08:30:00Z", "data": {}}, "type"),
        (body("entitlement.reversed"), "type"),
        (body("voucher.redeemed", amount={"amount": "1.00", "currency": "COP"}, merchant="m"), "type"),
        (body("entitlement.issued", card_token="tok", card_last4="42"), "data.card_last4"),
        (body("entitlement.issued", card_last4="0042"), "data.card_token"),
        (body("entitlement.failed", reason="x", retryable="yes"), "data.retryable"),
        ({**body("entitlement.failed", reason="x", retryable=True), "timestamp": "2026-11-22T08:30:00"}, "timestamp"),
        ({**body("entitlement.failed", reason="x", retryable=True), "timestamp": 1795336200}, "timestamp"),
        ({**body("entitlement.failed", reason="x", retryable=True), "timestamp": "1795336200"}, "timestamp"),
        ({**body("entitlement.failed", reason="x", retryable=True), "timestamp": 0.5}, "timestamp"),
        (
            {**body("entitlement.failed", reason="x", retryable=True), "data": {"provider_ref": "p"}},
            "data.entitlement_id",
        ),
    ],
)
def test_malformed_card_events_name_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedEvent) as raised:
        parse_card_event(payload)
    assert field in [error["field"] for error in raised.value.errors]


@pytest.mark.parametrize(
    "amount",
    [
        {"amount": "12.5", "currency": "COP"},
        {"amount": "0.00", "currency": "COP"},
        {"amount": "-1.00", "currency": "COP"},
        {"amount": "1.00", "currency": "ZZZ"},
        {"amount": "1.00", "currency": "CLP"},
        {"amount": 12.5, "currency": "COP"},
        {"amount": "１２.５０", "currency": "COP"},
    ],
)
def test_redemption_amounts_are_exact_positive_decimals(amount: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent) as raised:
        parse_voucher_event(body("voucher.redeemed", amount=amount, merchant="Tienda"))
    assert raised.value.errors[0]["field"].startswith("data.amount")


def test_a_body_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedEvent):
        parse_card_event(["entitlement.issued"])  # type: ignore[arg-type]
    assert issubclass(MalformedEvent, ValueError)
