"""Only a provider holding the secret gets an event stored: every forgery or replay outside the window is a 401."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from adapters.providers.base import ProviderConfigError
from cbi_service.app import create_app
from tests.conftest import TEST_PROVIDERS, TEST_WEBHOOK_SECRET
from tests.support import assert_problem
from tests.webhooks.support import (
    card_issued,
    client_for,
    count_events,
    deliver,
    event_body,
    signed_headers,
    stored_events,
)

OTHER_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


async def test_a_signed_event_is_stored_and_acknowledged(client, session_factory):
    entitlement_id = uuid.uuid4()
    body = card_issued(entitlement_id)
    response = await deliver(client, "cards", body, webhook_id="msg_first")
    assert response.status_code == 202, response.text
    ack = response.json()
    assert ack["status"] == "received"
    assert ack["duplicate"] is False
    (event,) = await stored_events(session_factory)
    assert str(event.id) == ack["id"]
    assert (event.provider, event.webhook_id, event.event_type) == ("cards", "msg_first", "entitlement.issued")
    assert event.entitlement_id == entitlement_id
    assert event.body == body.decode(), "the bytes the signature covered are kept as received"
    assert event.event["card_last4"] == "4242"


async def test_timestamps_inside_the_tolerance_are_accepted(client):
    for skew in (timedelta(minutes=-4, seconds=-50), timedelta(minutes=4, seconds=50)):
        response = await deliver(client, "cards", card_issued(uuid.uuid4()), at=datetime.now(UTC) + skew)
        assert response.status_code == 202, (skew, response.text)


@pytest.mark.parametrize(
    "tamper",
    [
        "wrong_secret",
        "altered_body",
        "stale",
        "future",
        "no_id",
        "no_timestamp",
        "no_signature",
        "no_headers",
        "signature_without_comma",
        "signature_garbage_base64",
        "signature_bad_padding",
        "other_version",
        "timestamp_not_a_number",
        "id_swapped",
    ],
)
async def test_forged_or_replayed_requests_are_401_and_nothing_is_stored(client, session_factory, tamper):
    body = card_issued(uuid.uuid4())
    headers = signed_headers(body)
    if tamper == "wrong_secret":
        headers = signed_headers(body, secret=OTHER_SECRET)
    elif tamper == "altered_body":
        body = body.replace(b"4242", b"4243")
    elif tamper == "stale":
        headers = signed_headers(body, at=datetime.now(UTC) - timedelta(minutes=5, seconds=10))
    elif tamper == "future":
        headers = signed_headers(body, at=datetime.now(UTC) + timedelta(minutes=5, seconds=10))
    elif tamper.startswith("no_"):
        name = {"no_id": "webhook-id", "no_timestamp": "webhook-timestamp", "no_signature": "webhook-signature"}
        for header in [name[tamper]] if tamper in name else list(name.values()):
            del headers[header]
    elif tamper == "signature_without_comma":
        headers["webhook-signature"] = headers["webhook-signature"].replace(",", "")
    elif tamper == "signature_garbage_base64":
        headers["webhook-signature"] = "v1,%%%not-base64%%%"
    elif tamper == "signature_bad_padding":
        headers["webhook-signature"] = "v1,abc"
    elif tamper == "other_version":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif tamper == "timestamp_not_a_number":
        headers["webhook-timestamp"] = "yesterday"
    elif tamper == "id_swapped":
        headers["webhook-id"] = "msg_someone_else"
    response = await client.post("/v1/webhooks/cards", content=body, headers=headers)
    assert_problem(response, 401)
    assert await count_events(session_factory) == 0


async def test_a_body_that_is_not_utf8_cannot_be_verified(client, session_factory):
    body = b'{"type": "entitlement.issued", "x": "\xff"}'
    headers = signed_headers(b"{}")
    response = await client.post("/v1/webhooks/cards", content=body, headers=headers)
    assert_problem(response, 401)
    assert await count_events(session_factory) == 0


async def test_unknown_provider_is_404(client, session_factory):
    body = card_issued(uuid.uuid4())
    response = await deliver(client, "acme", body)
    assert_problem(response, 404)
    assert await count_events(session_factory) == 0


@pytest.mark.parametrize(
    ("provider", "body", "status"),
    [
        ("cards", b'{"type": "entitlement.issued", "data": {', 400),
        ("cards", b"", 400),
        ("cards", b"[1, 2, 3]", 422),
        ("cards", event_body("entitlement.teleported", uuid.uuid4()), 422),
        ("cards", event_body("entitlement.issued", uuid.uuid4(), card_token="tok"), 422),
        ("cards", event_body("entitlement.issued", "not-a-uuid", card_token="tok", card_last4="4242"), 422),
        (
            "cards",
            event_body("voucher.redeemed", uuid.uuid4(), amount={"amount": "1.00", "currency": "COP"}, merchant="m"),
            422,
        ),
        (
            "vouchers",
            event_body("voucher.redeemed", uuid.uuid4(), amount={"amount": "1.0", "currency": "COP"}, merchant="m"),
            422,
        ),
        ("vouchers", event_body("entitlement.failed", uuid.uuid4(), reason="declined", retryable="yes"), 422),
        (
            "vouchers",
            event_body(
                "voucher.redeemed", uuid.uuid4(), amount={"amount": "1.00", "currency": "COP"}, merchant="a\x00"
            ),
            422,
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "array",
        "unknown_type",
        "missing_last4",
        "bad_id",
        "card_redeemed",
        "bad_decimals",
        "bad_bool",
        "nul_char",
    ],
)
async def test_authentic_but_malformed_events_are_4xx_and_not_stored(client, session_factory, provider, body, status):
    response = await client.post(f"/v1/webhooks/{provider}", content=body, headers=signed_headers(body))
    problem = assert_problem(response, status)
    if status == 422:
        assert problem["errors"], problem
    assert await count_events(session_factory) == 0


async def test_the_same_webhook_id_three_times_is_stored_once(client, session_factory):
    body = card_issued(uuid.uuid4())
    answers = [await deliver(client, "cards", body, webhook_id="msg_again") for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 200, 200]
    assert {a.json()["id"] for a in answers} == {answers[0].json()["id"]}
    assert [a.json()["duplicate"] for a in answers] == [False, True, True]
    assert await count_events(session_factory) == 1


async def test_webhook_ids_are_scoped_to_the_provider(client, session_factory):
    entitlement_id = uuid.uuid4()
    first = await deliver(client, "cards", card_issued(entitlement_id), webhook_id="msg_shared")
    second = await deliver(client, "vouchers", event_body("voucher.expired", entitlement_id), webhook_id="msg_shared")
    assert (first.status_code, second.status_code) == (202, 202)
    assert await count_events(session_factory) == 2


async def test_secret_rotation_accepts_old_and_new_secrets_at_once(settings, session_factory):
    rotating = {**TEST_PROVIDERS["cards"], "webhook_secret": [TEST_WEBHOOK_SECRET, OTHER_SECRET]}
    third = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    async with client_for(settings, providers={**TEST_PROVIDERS, "cards": rotating}) as client:
        assert (await deliver(client, "cards", card_issued(uuid.uuid4()))).status_code == 202
        assert (await deliver(client, "cards", card_issued(uuid.uuid4()), secret=OTHER_SECRET)).status_code == 202
        assert_problem(await deliver(client, "cards", card_issued(uuid.uuid4()), secret=third), 401)
        body = card_issued(uuid.uuid4())
        headers = signed_headers(body, secret=third, webhook_id="msg_both")
        newer = signed_headers(
            body,
            secret=OTHER_SECRET,
            webhook_id="msg_both",
            at=datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC),
        )
        headers["webhook-signature"] += " " + newer["webhook-signature"]
        response = await client.post("/v1/webhooks/cards", content=body, headers=headers)
        assert response.status_code == 202, "a header carrying several signatures passes if one of them is valid"
    assert await count_events(session_factory) == 3


@pytest.mark.parametrize(
    "secret",
    ["whsec_not base64!", "whsec_", "whsec_a", [], ["whsec_c2VjcmV0", 42]],
    ids=["not_base64", "empty", "bad_length", "empty_list", "not_a_string"],
)
def test_a_bad_configured_secret_stops_startup(settings, secret):
    providers = {**TEST_PROVIDERS, "cards": {**TEST_PROVIDERS["cards"], "webhook_secret": secret}}
    with pytest.raises(ProviderConfigError, match="webhook_secret"):
        create_app(settings.model_copy(update={"providers": providers}))


@pytest.mark.parametrize(
    ("secret", "refusal"),
    [
        ("whsec_c2VjcmV0", "at least"),
        (TEST_WEBHOOK_SECRET, "published example"),
        (TEST_WEBHOOK_SECRET.removeprefix("whsec_"), "published example"),
    ],
    ids=["short", "published", "published_bare"],
)
def test_production_refuses_short_and_published_secrets(settings, secret, refusal):
    providers = {**TEST_PROVIDERS, "cards": {**TEST_PROVIDERS["cards"], "webhook_secret": secret}}
    with pytest.raises(ProviderConfigError, match=refusal):
        create_app(settings.model_copy(update={"providers": providers, "env": "production"}))


async def test_a_provider_without_a_secret_accepts_nothing(settings, session_factory):
    providers = {**TEST_PROVIDERS, "cards": {"adapter": "prepaid_card", "base_url": "http://127.0.0.1:9"}}
    async with client_for(settings, providers=providers) as client:
        assert_problem(await deliver(client, "cards", card_issued(uuid.uuid4())), 401)
    assert await count_events(session_factory) == 0


async def test_oversized_bodies_are_refused_before_anything_else(client, session_factory):
    body = event_body("entitlement.issued", uuid.uuid4(), card_token="t" * 70_000, card_last4="4242")
    response = await deliver(client, "cards", body)
    assert_problem(response, 413)
    assert await count_events(session_factory) == 0


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_received_duplicate_and_rejected_events(client):
    labels = {"provider": "vouchers", "type": "voucher.expired"}
    before = {
        "received": _sample("cbi_webhook_events_received_total", **labels),
        "duplicate": _sample("cbi_webhook_events_duplicate_total", **labels),
        "signature": _sample(
            "cbi_webhook_events_rejected_total", provider="vouchers", type="unknown", reason="signature"
        ),
        "invalid": _sample("cbi_webhook_events_rejected_total", provider="vouchers", type="unknown", reason="invalid"),
    }
    body = event_body("voucher.expired", uuid.uuid4())
    await deliver(client, "vouchers", body, webhook_id="msg_metrics")
    await deliver(client, "vouchers", body, webhook_id="msg_metrics")
    await deliver(client, "vouchers", body, secret=OTHER_SECRET)
    await deliver(client, "vouchers", event_body("voucher.exploded", uuid.uuid4()))
    assert _sample("cbi_webhook_events_received_total", **labels) == before["received"] + 1
    assert _sample("cbi_webhook_events_duplicate_total", **labels) == before["duplicate"] + 1
    assert (
        _sample("cbi_webhook_events_rejected_total", provider="vouchers", type="unknown", reason="signature")
        == before["signature"] + 1
    )
    assert (
        _sample("cbi_webhook_events_rejected_total", provider="vouchers", type="unknown", reason="invalid")
        == before["invalid"] + 1
    )
    exposition = (await client.get("/metrics")).text
    assert 'cbi_webhook_events_received_total{provider="vouchers",type="voucher.expired"}' in exposition


async def test_the_signature_covers_the_raw_utf8_bytes(client, session_factory):
    body = json.dumps(
        {
            "type": "voucher.redeemed",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {
                "entitlement_id": str(uuid.uuid4()),
                "provider_ref": "ref-ñ",
                "amount": {"amount": "1500.00", "currency": "COP"},
                "merchant": "Panadería Señor Pan 🍞",
            },
        },
        ensure_ascii=False,
        indent=2,
    ).encode()
    response = await client.post("/v1/webhooks/vouchers", content=body, headers=signed_headers(body))
    assert response.status_code == 202, response.text
    (event,) = await stored_events(session_factory)
    assert event.body.encode() == body
    assert event.event["merchant"] == "Panadería Señor Pan 🍞"


async def test_a_malformed_signature_entry_does_not_hide_a_valid_one(client, session_factory):
    body = card_issued(uuid.uuid4())
    headers = signed_headers(body)
    headers["webhook-signature"] = f"v1,abc v1a,xyz {headers['webhook-signature']}"
    response = await client.post("/v1/webhooks/cards", content=body, headers=headers)
    assert response.status_code == 202, response.text
    assert await count_events(session_factory) == 1
